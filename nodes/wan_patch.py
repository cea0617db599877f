"""Apply IM-Animation to a ComfyUI Wan MODEL, through ModelPatcher.clone().

The patched model is stateless: everything that belongs to one video (the retargeted motion, the expression
tokens, which frames are the kept reference) travels in the CONDITIONING and the LATENT that
IM-Animation Conditioning builds, so any sampler node can sample it, and one patched model serves every window
and every video:
- the motion rides in ``noise_concat`` (ComfyUI concatenates it to the latent's channels; the split patch
  embedding reads those channels);
- the expression tokens ride in the conditioning's ``model_conds`` (EXPRESSION_COND); a diffusion-model
  wrapper moves them into ``transformer_options``, where the expression block patches read them;
- a marker of the modules (MODULES_COND) lets the wrapper refuse conditioning made with other modules, or none;
- the kept reference frame is the LATENT's ``noise_mask``, which the sampler hands to the model.
"""

import hashlib
import math

import comfy.conds
import comfy.ldm.wan.model
import comfy.model_base
import comfy.patcher_extension
import torch

from ..im_animation_core.errors import InputError
from ..im_animation_core.injection import REFERENCE_FRAMES, MotionPatchEmbedding
from ..im_animation_core.modules import IMAnimationModules
from .context_windows import anchored_handler

ADDITIONAL_MODELS_KEY = "im_animation"
WRAPPER_KEY = "im_animation"
EXPRESSION_COND = "ima_expression"  # [B,F_out,K,W] expression tokens of the output latent frames
MODULES_COND = "ima_modules"  # the id of the modules file the conditioning was made with


def modules_marker(modules: IMAnimationModules) -> str:
    """What identifies a set of modules in the conditioning: their DiT sizes and a digest of the weights the
    model patch uses (the motion channels' convolution, the expression blocks' query weights), so two loads of
    one file agree and modules of another shape or training do not. Cached on the modules (weights are fixed at
    inference)."""
    cached = getattr(modules, "_ima_marker", None)
    if cached is None:
        digest = hashlib.sha1(repr(sorted(modules.dit.sizes().items())).encode())
        for t in [modules.motion_patch.weight, *(b.attn.q.weight for b in modules.expression_blocks)]:
            digest.update(t.detach().float().cpu().contiguous().numpy().tobytes())
        cached = digest.hexdigest()[:16]
        modules._ima_marker = cached
    return cached


class ExpressionPatch:
    """Block-replace patch: run the DiT block, then the expression block on its output, with the expression
    tokens of the conditioning being sampled (none: the block alone). The first REFERENCE_FRAMES latent
    frames (the identity) get no expression."""

    def __init__(self, block: torch.nn.Module):
        self.block = block

    def __deepcopy__(self, memo):
        # ModelPatcher.clone() deep-copies model_options; the block belongs to the modules' own ModelPatcher
        # (loaded and offloaded with it), so every clone must share it, not copy its weights.
        return self

    def __call__(self, args, extra):
        out = extra["original_block"](args)
        tokens = args.get("transformer_options", {}).get(EXPRESSION_COND)
        if tokens is not None:
            img = out["img"]
            out["img"] = self.block(img, tokens.to(img.device), skip_frames=REFERENCE_FRAMES, inplace=True)
        return out


class ConditioningCheck:
    """Diffusion-model wrapper: moves the expression tokens from the model's inputs into transformer_options
    and refuses inputs that were not made by IM-Animation Conditioning with these modules."""

    def __init__(self, modules: IMAnimationModules):
        self.modules = modules

    def __call__(self, executor, x, timestep, context, clip_fea=None, time_dim_concat=None, transformer_options=None,
                 **kwargs):
        # the sampler builds this dict for each model call, so the tokens set in it stay with this call
        transformer_options = {} if transformer_options is None else transformer_options
        marker = kwargs.pop(MODULES_COND, None)
        if marker != modules_marker(self.modules):
            raise ValueError(
                "Apply IM-Animation: the conditioning given to the sampler was not made by IM-Animation Conditioning"
                if marker is None else
                "Apply IM-Animation: the conditioning was made from a retargeted motion of other IM-Animation "
                "modules than the ones applied to this model; use one Load IM-Animation Modules node for both")
        tokens = kwargs.pop(EXPRESSION_COND, None)
        if tokens is not None:
            transformer_options[EXPRESSION_COND] = tokens
        else:
            transformer_options.pop(EXPRESSION_COND, None)
        check_model_inputs(x, timestep)
        out = executor(x, timestep, context, clip_fea, time_dim_concat, transformer_options, **kwargs)
        check_model_output(out)
        return out


# A Wan model predicts a flow velocity of the size of the latents (single digits); an output beyond this has
# exploded (absurd weights, a broken patch) and would decode to a black or white video.
MAX_MODEL_OUTPUT = 1e4


class SamplingError(ValueError):
    """A patched model's sampling run went wrong in a way the user can fix; ``reason`` is the message without
    the node name, for the node that ran the sampler to prefix its own."""

    def __init__(self, reason: str):
        super().__init__(f"Apply IM-Animation: {reason}")
        self.reason = reason


def _finite(t) -> bool:
    return not isinstance(t, torch.Tensor) or not t.is_floating_point() or bool(torch.isfinite(t).all())


def check_model_inputs(x: torch.Tensor, timestep: torch.Tensor) -> None:
    """Non-finite inputs of a model call come from the sampler's settings, not from the model."""
    if not _finite(timestep):
        raise SamplingError("the sampler gave the model a NaN or infinite noise level: check the shift of the "
                            "model sampling node (ModelSamplingSD3: a finite number > 0) and the scheduler.")
    if not _finite(x):
        raise SamplingError("the sampler gave the model NaN or infinite latents: an earlier step diverged. Check "
                            "cfg (a finite number, e.g. 5.0), the model sampling node's shift (> 0) and the "
                            "sampler.")


def check_model_output(out: torch.Tensor) -> None:
    """A non-finite or exploding prediction stops the run instead of decoding to a black video."""
    if not _finite(out):
        raise SamplingError("the diffusion model returned NaN or infinite values: the diffusion model file or the "
                            "IM-Animation modules file holds bad weights, or a LoRA or other patch on the model "
                            "broke it. Check those files and patches.")
    peak = float(out.detach().abs().amax()) if isinstance(out, torch.Tensor) and out.numel() else 0.0
    if peak > MAX_MODEL_OUTPUT:
        raise SamplingError(f"the diffusion model's output reached {peak:.3g}, far beyond what a working model "
                            f"gives (below {MAX_MODEL_OUTPUT:g}): the diffusion model file or the IM-Animation "
                            "modules file holds absurd weights, or a LoRA strength or other patch is far too "
                            "large. Check those files and patches.")


def _latent_frames(shape) -> tuple[int, ...]:
    return tuple(int(v) for v in shape[-3:])


class SamplingCheck:
    """Outer-sample wrapper (every sampler node runs it: KSampler, SamplerCustomAdvanced, the one-node
    sampler): refuses settings that would sample to NaN or nothing, and a latent that is not the one IM-Animation
    Conditioning made, before any step; refuses a non-finite result after the last one."""

    def __call__(self, executor, noise, latent_image, sampler, sigmas, *args, **kwargs):
        guider = getattr(executor, "class_obj", None)
        for name in ("cfg", "cfg1", "cfg2"):
            value = getattr(guider, name, None)
            if isinstance(value, (int, float)) and not math.isfinite(value):
                raise SamplingError(f"the sampler's {name} is {value}: give a finite guidance scale (e.g. 5.0, or "
                                    "1.0 without a negative prompt).")
        if not _finite(sigmas):
            raise SamplingError("the noise schedule (sigmas) holds NaN or infinite values: check the shift of the "
                                "model sampling node (ModelSamplingSD3: a finite number > 0) and the scheduler.")
        if sigmas.numel() and float(sigmas.max()) <= 0:
            raise SamplingError("the noise schedule (sigmas) is all zero, so nothing would be generated: the model "
                                "sampling node's shift must be > 0 (ModelSamplingSD3: e.g. 5 or 8).")
        self.check_latent(guider, latent_image)
        out = executor(noise, latent_image, sampler, sigmas, *args, **kwargs)
        if not _finite(out):
            raise SamplingError("sampling produced NaN or infinite latents: check cfg, the model sampling node's "
                                "shift, the sampler, and the model and IM-Animation modules files.")
        return out

    @staticmethod
    def check_latent(guider, latent_image) -> None:
        """The latent must be the one IM-Animation Conditioning made: the motion is concatenated to it frame by
        frame (without this check the host fails with 'Sizes of tensors must match')."""
        if not isinstance(latent_image, torch.Tensor) or latent_image.ndim != 5:
            return
        for conds in (getattr(guider, "conds", None) or {}).values():
            for cond in conds or []:
                motion = cond.get("noise_concat") if isinstance(cond, dict) else None
                if isinstance(motion, torch.Tensor) and motion.ndim == 5 and \
                        _latent_frames(motion.shape) != _latent_frames(latent_image.shape):
                    (f, h, w), (mf, mh, mw) = _latent_frames(latent_image.shape), _latent_frames(motion.shape)
                    raise SamplingError(
                        f"the sampler's latent has {f} frames of {w}x{h} but the conditioning's motion {mf} frames "
                        f"of {mw}x{mh}: connect IM-Animation Conditioning's 'latent' output to the sampler's "
                        "latent input (not an Empty Latent).")


class ContextWindowsAdapter:
    """Outer-sample wrapper: when the model carries the host's context windows (WAN Context Windows), this
    sampling run uses a copy of the handler that gives every window the identity and its own slice of the
    motion and expression (nodes.context_windows)."""

    def __init__(self, modules: IMAnimationModules):
        self.modules = modules

    def __call__(self, executor, *args, **kwargs):
        options = getattr(getattr(executor, "class_obj", None), "model_options", None)
        handler = options.get("context_handler") if isinstance(options, dict) else None
        try:
            anchored = None if handler is None else anchored_handler(handler, self.modules.clip_frames)
        except InputError as e:
            raise SamplingError(str(e)) from None
        if anchored is None:
            return executor(*args, **kwargs)
        options["context_handler"] = anchored
        try:
            return executor(*args, **kwargs)
        finally:
            options["context_handler"] = handler


class TI2VReference:
    """Object patches that give a Wan2.1-family model the frames its noise mask keeps as ComfyUI's WAN22 gives
    them to a Wan2.2 TI2V model: clean, with per-frame timestep 0. They call WAN22's own methods; WAN21 does
    not pass the sampler's denoise mask on to the model, so its ``extra_conds`` is wrapped to do so."""

    def __init__(self, extra_conds):
        self.base_extra_conds = extra_conds

    def extra_conds(self, **kwargs):
        out = self.base_extra_conds(**kwargs)
        mask = kwargs.get("denoise_mask")
        if mask is not None:
            out["denoise_mask"] = comfy.conds.CONDRegular(mask)
        return out

    @staticmethod
    def process_timestep(timestep: torch.Tensor, x: torch.Tensor, denoise_mask=None, **kwargs) -> torch.Tensor:
        return comfy.model_base.WAN22.process_timestep(None, timestep, x, denoise_mask=denoise_mask)

    @staticmethod
    def scale_latent_inpaint(**kwargs) -> torch.Tensor:
        return comfy.model_base.WAN22.scale_latent_inpaint(None, **kwargs)


class SharedMotionPatchEmbedding(MotionPatchEmbedding):
    """MotionPatchEmbedding whose motion convolution is not a submodule: it belongs to the modules' own
    ModelPatcher (loaded with the patched model as an additional model). As a submodule of the Wan model it
    would have two owners: the Wan model's patcher would move it to the CPU when it unloads while the modules'
    patcher still counts it as loaded on the GPU, and low-VRAM loading would leave it behind."""

    def __init__(self, base: torch.nn.Module, motion_conv: torch.nn.Conv3d, latent_channels: int):
        super().__init__(base, motion_conv, latent_channels)
        del self._modules["motion_conv"]
        self.__dict__["motion_conv"] = motion_conv


def wan_diffusion_model(node: str, model) -> comfy.ldm.wan.model.WanModel:
    dm = model.get_model_object("diffusion_model") if hasattr(model, "get_model_object") else model
    if not isinstance(dm, comfy.ldm.wan.model.WanModel):
        raise ValueError(f"{node}: the model is a {type(dm).__name__}, not a Wan DiT. Load a Wan2.2 TI2V-5B (or "
                         "another Wan) model with Load Diffusion Model.")
    return dm


def check_compatible(node: str, dm, latent_channels: int, modules: IMAnimationModules) -> None:
    spec = modules.dit
    if dm.dim != spec.dim:
        raise ValueError(f"{node}: the IM-Animation modules were made for a DiT of width {spec.dim} but this model's "
                         f"width is {dm.dim}. Use modules trained for this model.")
    if latent_channels != spec.latent_channels:
        raise ValueError(f"{node}: the model works on {latent_channels}-channel latents, the IM-Animation modules on "
                         f"{spec.latent_channels}. Use modules trained for this model.")
    needed = spec.expression_block_indices
    if needed and len(dm.blocks) <= needed[-1]:
        raise ValueError(f"{node}: the model has {len(dm.blocks)} blocks but the expression blocks run after blocks "
                         f"{needed}. Use modules trained for this model.")


def applied_modules(model):
    """The IM-Animation modules patcher already applied to ``model`` (None: not applied)."""
    found = model.get_additional_models_with_key(ADDITIONAL_MODELS_KEY)
    return found[0] if found else None


def apply_im_animation(node: str, model, modules_patcher):
    """A clone of ``model`` that takes [latent, motion] channels, runs the expression blocks and reads both from
    the conditioning (module doc). A model already patched with the same modules is returned as a clone.

    A base DiT gets a split patch embedding (object patch); a DiT exported with the widened patch embedding
    already has the motion channels and keeps its own weights. When the modules were trained with a clean
    reference frame (DiTSpec.clean_reference) and the model is not a Wan2.2 TI2V model (whose WAN22 class does
    it already), the latent frames the noise mask keeps go in clean with timestep 0, as in training."""
    dm = wan_diffusion_model(node, model)
    modules: IMAnimationModules = modules_patcher.model
    present = applied_modules(model)
    if present is not None:
        if present.model is modules:
            return model.clone()
        raise ValueError(f"{node}: this model already has other IM-Animation modules applied; apply one set only "
                         "(connect the model from Load Diffusion Model).")
    latent_channels = model.get_model_object("latent_format").latent_channels
    check_compatible(node, dm, latent_channels, modules)
    motion_channels = modules.motion_patch.weight.shape[1]
    patched = model.clone()
    patched.set_additional_models(ADDITIONAL_MODELS_KEY, [modules_patcher])
    embed = model.get_model_object("diffusion_model.patch_embedding")
    in_channels = embed.weight.shape[1]
    if in_channels == latent_channels:
        patched.add_object_patch("diffusion_model.patch_embedding",
                                 SharedMotionPatchEmbedding(embed, modules.motion_patch, latent_channels))
    elif in_channels != latent_channels + motion_channels:
        raise ValueError(f"{node}: the model's patch embedding takes {in_channels} channels; expected "
                         f"{latent_channels} (base model) or {latent_channels + motion_channels} (exported "
                         "IM-Animation DiT). Use the matching model file.")
    if modules.dit.clean_reference and not isinstance(model.model, comfy.model_base.WAN22):
        reference = TI2VReference(model.get_model_object("extra_conds"))
        patched.add_object_patch("extra_conds", reference.extra_conds)
        patched.add_object_patch("process_timestep", reference.process_timestep)
        patched.add_object_patch("scale_latent_inpaint", reference.scale_latent_inpaint)
    patched.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, WRAPPER_KEY,
                                 ConditioningCheck(modules))
    patched.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.OUTER_SAMPLE, WRAPPER_KEY, SamplingCheck())
    patched.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.OUTER_SAMPLE, WRAPPER_KEY,
                                 ContextWindowsAdapter(modules))
    for block, index in zip(modules.expression_blocks, modules.dit.expression_block_indices, strict=True):
        patched.set_model_patch_replace(ExpressionPatch(block), "dit", "double_block", index)
    return patched
