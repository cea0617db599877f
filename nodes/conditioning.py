"""IM-Animation Conditioning: positive, negative and the latent of one window, for any sampler node."""

import logging

import comfy.conds
import torch
from comfy_api.latest import io

from ..im_animation_core.frames import latent_frame_count
from ..im_animation_core.injection import REFERENCE_FRAMES
from ..im_animation_core.windows import Window, WindowInputs, window_inputs
from . import socket_checks, types
from .errors import user_errors
from .wan_patch import EXPRESSION_COND, MODULES_COND, modules_marker

log = logging.getLogger(__name__)

WAN_TEXT_DIM = 4096  # umt5-xxl's width, which every Wan DiT's text embedding reads
EMPTY_TEXT_TOKENS = 512  # ComfyUI pads Wan prompts to 512 tokens


def empty_conditioning(text_dim: int = WAN_TEXT_DIM) -> list:
    """For models used without a text encoder: a zero context, like an empty padded prompt."""
    return [[torch.zeros(1, EMPTY_TEXT_TOKENS, text_dim), {}]]


def checked_inputs(node: str, retargeted_motion, expression):
    """The node inputs as core objects, refused with what to connect when they are not."""
    rm = socket_checks.retargeted(node, "retargeted_motion", retargeted_motion)
    if expression is not None:
        socket_checks.expression(node, "expression", expression)
        if expression.modules is not rm.modules:
            raise ValueError(f"{node}: expression and retargeted_motion come from different IM-Animation modules; "
                             "use one Load IM-Animation Modules node for both.")
    if not (torch.isfinite(rm.motion).all() and torch.isfinite(rm.identity_latent).all()):
        raise ValueError(f"{node}: retargeted_motion holds NaN or infinite values; check the identity image, "
                         "the VAE and the modules file given to Retarget to Identity.")
    return rm


def with_im_animation(conditioning: list, inputs: WindowInputs, tokens: torch.Tensor | None, modules) -> list:
    """conditioning + the window's motion (``noise_concat``), expression tokens [F_win,K,W] (None: none) and
    the modules' marker, which the model patched by Apply IM-Animation reads (nodes.wan_patch)."""
    out = []
    for cross_attn, values in conditioning:
        values = dict(values)
        values["noise_concat"] = inputs.motion
        model_conds = dict(values.get("model_conds", {}))
        model_conds[MODULES_COND] = comfy.conds.CONDConstant(modules_marker(modules))
        if tokens is not None:
            model_conds[EXPRESSION_COND] = comfy.conds.CONDRegular(tokens.unsqueeze(0))
        else:
            model_conds.pop(EXPRESSION_COND, None)
        values["model_conds"] = model_conds
        out.append([cross_attn, values])
    return out


def latent_expression(expression, length: int) -> torch.Tensor | None:
    """[F_lat,K,W] expression tokens of the clip's latent frames (None without expression); windows slice it."""
    return None if expression is None else expression.for_length(length)


def warn_long_window(node: str, frames: int, clip_frames: int, advice: str) -> None:
    """Modules trained on short clips lose quality on longer windows (docs/long_clips.md)."""
    if frames > clip_frames:
        log.warning("%s: a window of %d frames is longer than the %d-frame clips these IM-Animation modules were "
                    "trained on; the result loses quality. %s", node, frames, clip_frames, advice)


def motion_and_prompt_inputs() -> list:
    """The inputs the conditioning node and the one-node sampler share, in the order both show them."""
    return [
        types.RetargetedMotion.Input("retargeted_motion", tooltip="From Retarget to Identity."),
        types.Expression.Input("expression", optional=True,
                               tooltip="From Expression Encode; leave empty to animate without expression control."),
        io.Conditioning.Input("positive", optional=True,
                              tooltip="Text prompt (CLIP Text Encode with umt5-xxl). Empty: no text."),
        io.Conditioning.Input("negative", optional=True,
                              tooltip="Negative prompt. Empty: no text (then cfg 1 saves half the time)."),
    ]


class IMAnimationConditioning(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            **types.ALIASES,
            node_id="IMA_Conditioning",
            display_name="IM-Animation Conditioning",
            category=types.CATEGORY,
            description="Adds the retargeted motion (and expression) to the prompts and builds the video latent "
                        "that starts from the identity image, for a model patched by Apply IM-Animation and any "
                        "sampler (KSampler, SamplerCustomAdvanced). One window: the whole retargeted clip.",
            inputs=motion_and_prompt_inputs(),
            outputs=[io.Conditioning.Output(display_name="positive"),
                     io.Conditioning.Output(display_name="negative"),
                     io.Latent.Output(display_name="latent"),
                     io.Int.Output(display_name="trim_latent",
                                   tooltip="Leading latent frames that hold the identity, not the video: connect "
                                           "to Trim Video Latent after sampling, before VAE Decode.")],
        )

    @classmethod
    def execute(cls, retargeted_motion, expression=None, positive=None, negative=None) -> io.NodeOutput:
        node = "IM-Animation Conditioning"
        rm = checked_inputs(node, retargeted_motion, expression)
        window = Window(0, latent_frame_count(rm.length), 0, 0)
        clip_frames = rm.modules.model.clip_frames
        warn_long_window(node, rm.length, clip_frames, f"For long clips use the Wan2.2 IM-Animation Sampler with "
                                                       f"window_frames {clip_frames}.")
        with user_errors(node):
            tokens = latent_expression(expression, rm.length)
            inputs = window_inputs(rm.identity_latent, rm.motion, window, _process_out(rm.identity_latent))
        positive = positive if positive is not None else empty_conditioning()
        negative = negative if negative is not None else empty_conditioning()
        return io.NodeOutput(with_im_animation(positive, inputs, tokens, rm.modules.model),
                             with_im_animation(negative, inputs, tokens, rm.modules.model),
                             {"samples": inputs.latent, "noise_mask": inputs.noise_mask}, REFERENCE_FRAMES)


def _process_out(identity_latent: torch.Tensor):
    """The Wan latent format's raw-to-sampler mapping for the identity latent's channel count."""
    import comfy.latent_formats

    channels = identity_latent.shape[1]
    formats = {16: comfy.latent_formats.Wan21, 48: comfy.latent_formats.Wan22}
    if channels not in formats:
        raise ValueError(f"IM-Animation Conditioning: the identity latent has {channels} channels; Wan VAEs give "
                         "16 (Wan2.1) or 48 (Wan2.2). Encode the identity with the model's VAE.")
    return formats[channels]().process_out

