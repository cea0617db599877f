"""IM-Animation Conditioning: positive, negative and the latent of one window, for any sampler node."""

import logging

import comfy.conds
import torch
from comfy_api.latest import io

from ..im_animation_core.chunks import plan_chunk
from ..im_animation_core.errors import InputError
from ..im_animation_core.injection import REFERENCE_FRAMES
from ..im_animation_core.windows import WindowInputs, window_inputs
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


UNPATCHED_MODEL = ("IM-Animation Conditioning: the model given to the sampler is not patched by Apply IM-Animation, "
                   "so it cannot take the motion channels this conditioning adds to the latent (the host would "
                   "stop with 'expected input ... channels'). Connect Load Diffusion Model -> Apply IM-Animation "
                   "(with the same Load IM-Animation Modules) -> the sampler's model input.")


def _refuse_unpatched_model(_hook, model, _model_options, _target_dict, _registered) -> bool:
    """should_register of the hook the conditioning carries: the host calls it with the sampler's model before
    the first step, on any model, patched or not. It registers nothing, so the host then drops the hook from the
    conditioning and sampling runs as without it."""
    from .wan_patch import applied_modules

    if not hasattr(model, "get_additional_models_with_key") or applied_modules(model) is None:
        raise ValueError(UNPATCHED_MODEL)
    return False


def _unpatched_model_check():
    """A HookGroup (one stateless hook), shared by every conditioning so that positive and negative keep one hook
    group and are batched together as before."""
    import comfy.hooks

    hook = comfy.hooks.TransformerOptionsHook()
    hook.custom_should_register = _refuse_unpatched_model
    group = comfy.hooks.HookGroup()
    group.add(hook)
    return group


UNPATCHED_MODEL_CHECK = _unpatched_model_check()


def with_im_animation(conditioning: list, inputs: WindowInputs, tokens: torch.Tensor | None, modules) -> list:
    """conditioning + the window's motion (``noise_concat``), expression tokens [F_win,K,W] (None: none) and
    the modules' marker, which the model patched by Apply IM-Animation reads (nodes.wan_patch), and a hook that
    names a model without that patch (the host alone would fail on the channel count)."""
    out = []
    for cross_attn, values in conditioning:
        values = dict(values)
        values["noise_concat"] = inputs.motion
        own = values.get("hooks")
        values["hooks"] = UNPATCHED_MODEL_CHECK if own is None else own.clone_and_combine(UNPATCHED_MODEL_CHECK)
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
                        "sampler (KSampler, SamplerCustomAdvanced; with WAN Context Windows for long clips). "
                        "Chunks: give the previous chunk's latent and its video_frame_offset to continue it.",
            inputs=[
                *motion_and_prompt_inputs(),
                io.Latent.Input("previous_chunk", optional=True,
                                tooltip="To continue a clip made in chunks: the previous chunk's sampled latent "
                                        "(the sampler's output). Its last latent frame is held fixed as this "
                                        "chunk's first."),
                io.Int.Input("video_frame_offset", default=0, min=0, max=1 << 20, optional=True,
                             tooltip="The first driving frame this chunk makes. To continue, connect the previous "
                                     "IM-Animation Conditioning's video_frame_offset output."),
                io.Int.Input("length", default=0, min=0, max=1 << 20, optional=True,
                             tooltip="Frames this chunk makes from video_frame_offset; 0: to the end of the "
                                     "retargeted motion."),
            ],
            outputs=[io.Conditioning.Output(display_name="positive"),
                     io.Conditioning.Output(display_name="negative"),
                     io.Latent.Output(display_name="latent"),
                     io.Int.Output(display_name="trim_latent",
                                   tooltip="Leading latent frames that hold the identity (and a continued chunk's "
                                           "carried-over frame), not new video: connect to Trim Video Latent after "
                                           "sampling. Join chunks with Latent Concat (dim t), then VAE Decode."),
                     io.Int.Output(display_name="video_frame_offset",
                                   tooltip="The frame after this chunk: the next chunk's video_frame_offset.")],
        )

    @classmethod
    def execute(cls, retargeted_motion, expression=None, positive=None, negative=None, previous_chunk=None,
                video_frame_offset=0, length=0) -> io.NodeOutput:
        node = "IM-Animation Conditioning"
        rm = checked_inputs(node, retargeted_motion, expression)
        marker = modules_marker(rm.modules.model)
        with user_errors(node):
            carried, previous_end = previous_chunk_frame(previous_chunk, rm.identity_latent, marker)
            chunk = plan_chunk(rm.length, video_frame_offset, length, previous_end, continued=carried is not None)
        for note in chunk.notes:
            log.warning("%s: %s.", node, note)
        window = chunk.window
        clip_frames = rm.modules.model.clip_frames
        warn_long_window(node, 1 + 4 * (window.stop - window.start - 1), clip_frames,
                         f"For long clips use WAN Context Windows with context_length {clip_frames}, chunks of "
                         f"{clip_frames} frames, or the Wan2.2 IM-Animation Sampler with window_frames "
                         f"{clip_frames}.")
        result = None
        if carried is not None:
            result = torch.zeros(*carried.shape[:2], window.stop, *carried.shape[-2:])
            result[:, :, window.start] = carried
        with user_errors(node):
            tokens = latent_expression(expression, rm.length)
            inputs = window_inputs(rm.identity_latent, rm.motion, window, _process_out(rm.identity_latent), result)
        tokens = None if tokens is None else tokens[window.start:window.stop]
        positive = positive if positive is not None else empty_conditioning()
        negative = negative if negative is not None else empty_conditioning()
        latent = {"samples": inputs.latent, "noise_mask": inputs.noise_mask,
                  CHUNK_KEY: {"modules": marker, "end": window.stop - 1}}
        return io.NodeOutput(with_im_animation(positive, inputs, tokens, rm.modules.model),
                             with_im_animation(negative, inputs, tokens, rm.modules.model),
                             latent, REFERENCE_FRAMES + window.context, chunk.next_offset)


CHUNK_KEY = "ima_chunk"  # in the LATENT: what later chunks check (samplers and Trim Video Latent keep it)


def previous_chunk_frame(previous_chunk, identity_latent: torch.Tensor, marker: str):
    """The previous chunk's last latent frame [1,C,h,w] and the clip latent frame it is (None when the latent
    does not say); (None, None) without a previous chunk. Refuses latents that cannot continue this clip."""
    if previous_chunk is None:
        return None, None
    samples = previous_chunk.get("samples") if isinstance(previous_chunk, dict) else None
    c, h, w = identity_latent.shape[1], identity_latent.shape[-2], identity_latent.shape[-1]
    if not isinstance(samples, torch.Tensor) or samples.ndim != 5:
        raise InputError("previous_chunk is not a video latent: connect the previous chunk's sampler output")
    if tuple(samples.shape[1:2]) + tuple(samples.shape[-2:]) != (c, h, w):
        raise InputError(f"previous_chunk is a {samples.shape[1]}-channel latent of {samples.shape[-1]}x"
                         f"{samples.shape[-2]}, but this identity is {c}-channel {w}x{h}: continue a chunk made "
                         "from the same Retarget to Identity settings (width, height, VAE)")
    info = previous_chunk.get(CHUNK_KEY)
    if isinstance(info, dict) and info.get("modules") not in (None, marker):
        raise InputError("previous_chunk was made with other IM-Animation modules than this retargeted motion; "
                         "use one Load IM-Animation Modules node for every chunk")
    last = samples[:1, :, -1].float().cpu()
    if not torch.isfinite(last).all():
        raise InputError("previous_chunk holds NaN or infinite values; sample it again")
    end = info.get("end") if isinstance(info, dict) and isinstance(info.get("end"), int) else None
    return last, end


def _process_out(identity_latent: torch.Tensor):
    """The Wan latent format's raw-to-sampler mapping for the identity latent's channel count."""
    import comfy.latent_formats

    channels = identity_latent.shape[1]
    formats = {16: comfy.latent_formats.Wan21, 48: comfy.latent_formats.Wan22}
    if channels not in formats:
        raise ValueError(f"IM-Animation Conditioning: the identity latent has {channels} channels; Wan VAEs give "
                         "16 (Wan2.1) or 48 (Wan2.2). Encode the identity with the model's VAE.")
    return formats[channels]().process_out

