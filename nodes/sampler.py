"""Wan2.2 IM-Animation Sampler: ComfyUI's own sampling on a patched Wan model."""

import logging
import math

import comfy.model_management as mm
import comfy.sample
import comfy.samplers
import comfy.utils
import latent_preview
import torch
from comfy_api.latest import io

from ..im_animation_core.frames import TEMPORAL_STRIDE, latent_frame_count
from ..im_animation_core.injection import REFERENCE_FRAMES
from ..im_animation_core.windows import blend_into, plan_windows, window_inputs
from . import types
from .conditioning import (
    checked_inputs,
    empty_conditioning,
    latent_expression,
    motion_and_prompt_inputs,
    warn_long_window,
    with_im_animation,
)
from .errors import user_errors
from .wan_patch import SamplingError, apply_im_animation, wan_diffusion_model

log = logging.getLogger(__name__)

SEED_RANGE = 1 << 64  # torch seeds are unsigned 64-bit
MAX_STEPS = 200  # Wan is sampled in 20-50 steps; far more only holds the server


def warn_about_windows(node: str, length: int, window_frames: int, windows: int, clip_frames: int) -> None:
    """Long-clip settings that lose quality with modules trained on short clips (docs/long_clips.md)."""
    warn_long_window(node, min(window_frames, length), clip_frames, f"Set window_frames to {clip_frames}.")
    if windows > 1:
        log.warning("%s: the %d-frame video is made in %d windows, each continuing from the previous one. A model "
                    "not trained to continue a clip (the demo set) is less faithful after the first window (about "
                    "2-3 dB PSNR on the demo; docs/long_clips.md).", node, length, windows)


class IMAnimationSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            **types.ALIASES,
            node_id="IMA_Wan22Sampler",
            display_name="Wan2.2 IM-Animation Sampler",
            category=types.CATEGORY,
            description="Animates the identity with the retargeted motion (and expression) using the Wan model from "
                        "Load Diffusion Model and ComfyUI's samplers. Returns the video latent for VAE Decode.",
            inputs=[
                io.Model.Input("model", tooltip="Wan2.2 TI2V-5B (or another Wan model) from Load Diffusion Model; "
                                                "may already carry LoRAs or other patches."),
                *motion_and_prompt_inputs(),
                io.Int.Input("seed", default=0, min=0, max=0xffffffffffffffff, control_after_generate=True,
                             tooltip="The random seed used for creating the noise."),
                io.Int.Input("steps", default=20, min=1, max=MAX_STEPS,
                             tooltip=f"Denoising steps (20-50 for Wan; at most {MAX_STEPS})."),
                io.Float.Input("cfg", default=5.0, min=0.0, max=100.0, step=0.1, round=0.01,
                               tooltip="Classifier-free guidance scale on the text prompt (the motion and "
                                       "expression condition both branches)."),
                io.Combo.Input("sampler_name", options=comfy.samplers.SAMPLER_NAMES, default="uni_pc",
                               tooltip="ComfyUI sampler."),
                io.Combo.Input("scheduler", options=comfy.samplers.SCHEDULER_NAMES, default="simple",
                               tooltip="ComfyUI noise schedule."),
                io.Int.Input("window_frames", default=81, min=5, max=1025, step=4,
                             tooltip="Frames generated at once. Longer videos are made in overlapping windows, "
                                     "each continuing from the last one (window n uses seed + n, wrapping "
                                     "past the largest seed)."),
                io.Int.Input("overlap_frames", default=16, min=4, max=1024, step=4,
                             tooltip="Frames shared by consecutive windows: the first latent frame is carried "
                                     "over, the rest are cross-faded."),
            ],
            outputs=[io.Latent.Output(display_name="LATENT")],
        )

    @classmethod
    def execute(cls, model, retargeted_motion, seed, steps, cfg, sampler_name, scheduler, window_frames=81,
                overlap_frames=16, expression=None, positive=None, negative=None) -> io.NodeOutput:
        node = "Wan2.2 IM-Animation Sampler"
        rm = checked_inputs(node, retargeted_motion, expression)
        if not math.isfinite(cfg):
            raise ValueError(f"{node}: cfg is {cfg}; give a finite guidance scale (e.g. 5.0, or 1.0 without a "
                             "negative prompt).")
        dm = wan_diffusion_model(node, model)
        latent_format = model.get_model_object("latent_format")
        channels = latent_format.latent_channels
        if rm.identity_latent.shape[1] != channels:
            raise ValueError(f"{node}: the identity was encoded to {rm.identity_latent.shape[1]}-channel latents "
                             f"but the model uses {channels}: give Retarget to Identity the VAE that belongs to this "
                             "model.")
        with user_errors(node):
            plan = plan_windows(latent_frame_count(rm.length), latent_frame_count(window_frames),
                                overlap_frames // TEMPORAL_STRIDE)
            tokens = latent_expression(expression, rm.length)  # a too-short clip is refused before sampling
        warn_about_windows(node, rm.length, window_frames, len(plan), rm.modules.model.clip_frames)
        text_dim = dm.text_embedding[0].in_features
        positive = positive if positive is not None else empty_conditioning(text_dim)
        negative = negative if negative is not None else empty_conditioning(text_dim)
        patched = apply_im_animation(node, model, rm.modules)  # one stateless patch serves every window

        h, w = rm.identity_latent.shape[-2:]
        result = torch.zeros(1, channels, latent_frame_count(rm.length), h, w)
        pbar = comfy.utils.ProgressBar(steps * len(plan))
        previewer = latent_preview.get_previewer(model.load_device, latent_format)
        for i, win in enumerate(plan):
            mm.throw_exception_if_processing_interrupted()
            with user_errors(node):
                inputs = window_inputs(rm.identity_latent, rm.motion, win, latent_format.process_out, result)
            window_tokens = None if tokens is None else tokens[win.start:win.stop]

            def callback(step, x0, x, total, offset=i * steps):
                preview = previewer.decode_latent_to_preview_image("JPEG", x0) if previewer else None
                pbar.update_absolute(offset + step + 1, steps * len(plan), preview)

            window_seed = (seed + i) % SEED_RANGE  # seeds near the top of the range wrap, as documented
            try:
                samples = comfy.sample.sample(
                    patched, comfy.sample.prepare_noise(inputs.latent, window_seed), steps, cfg, sampler_name,
                    scheduler, with_im_animation(positive, inputs, window_tokens, rm.modules.model),
                    with_im_animation(negative, inputs, window_tokens, rm.modules.model),
                    inputs.latent, noise_mask=inputs.noise_mask, callback=callback,
                    disable_pbar=not comfy.utils.PROGRESS_BAR_ENABLED, seed=window_seed)
            except SamplingError as e:
                raise ValueError(f"{node}: sampling window {i + 1} of {len(plan)}: {e.reason}") from None
            if not torch.isfinite(samples).all():
                # Decoding would give an all-black video with no sign of what went wrong.
                raise ValueError(f"{node}: sampling window {i + 1} of {len(plan)} produced NaN or infinite latents. "
                                 "The diffusion model or the IM-Animation modules file holds bad weights, or the "
                                 "sampler diverged: check the model files, lower cfg or try another sampler.")
            blend_into(result, samples[:, :, REFERENCE_FRAMES:].float().cpu(), win)
        return io.NodeOutput({"samples": result.to(mm.intermediate_device())})
