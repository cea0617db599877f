"""Patch a ComfyUI Wan MODEL with the IM-Animation adapters, through ModelPatcher.clone()."""

import comfy.ldm.wan.model
import comfy.model_base
import torch

from ..im_animation_core.injection import MotionPatchEmbedding
from ..im_animation_core.modules import IMAnimationModules

ADDITIONAL_MODELS_KEY = "im_animation"


class ExpressionPatch:
    """Block-replace patch: run the DiT block, then the expression block on its output.

    tokens: [F_out,K,W] expression tokens of the output latent frames; the first ``skip_frames`` latent
    frames (the identity reference frame) get none."""

    def __init__(self, block: torch.nn.Module, tokens: torch.Tensor, skip_frames: int):
        self.block, self.tokens, self.skip_frames = block, tokens, skip_frames

    def __call__(self, args, extra):
        out = extra["original_block"](args)
        img = out["img"]
        out["img"] = self.block(img, self.tokens.to(img.device), skip_frames=self.skip_frames)
        return out


class TI2VReferencePatch:
    """Object patches that give a Wan2.1-family model the frames its noise mask keeps as ComfyUI's WAN22 gives
    them to a Wan2.2 TI2V model: clean, with per-frame timestep 0. They call WAN22's own methods; WAN21 gets
    no denoise_mask among its model inputs, so the window's mask [1,1,F,h,w] is held here."""

    def __init__(self, noise_mask: torch.Tensor):
        self.noise_mask = noise_mask

    def process_timestep(self, timestep: torch.Tensor, x: torch.Tensor, **kwargs) -> torch.Tensor:
        return comfy.model_base.WAN22.process_timestep(None, timestep, x, denoise_mask=self.noise_mask.to(timestep))

    @staticmethod
    def scale_latent_inpaint(**kwargs) -> torch.Tensor:
        return comfy.model_base.WAN22.scale_latent_inpaint(None, **kwargs)


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


def patch_wan(node: str, model, modules_patcher, motion_channels: int, expression: torch.Tensor | None,
              skip_frames: int, noise_mask: torch.Tensor):
    """Return a clone of ``model`` that takes [latent, motion] channels and runs the expression blocks.

    A base DiT gets a split patch embedding (object patch); a DiT exported with the widened patch
    embedding already has the motion channels and keeps its own weights. When the modules were trained with
    a clean reference frame (DiTSpec.clean_reference) and the model is not a Wan2.2 TI2V model (whose WAN22
    class does it already), the latent frames ``noise_mask`` [1,1,F,h,w] keeps (0) go in clean with timestep 0:
    the Wan2.1-family model then sees what it saw in training."""
    dm = wan_diffusion_model(node, model)
    latent_channels = model.get_model_object("latent_format").latent_channels
    modules: IMAnimationModules = modules_patcher.model
    check_compatible(node, dm, latent_channels, modules)
    patched = model.clone()
    patched.set_additional_models(ADDITIONAL_MODELS_KEY, [modules_patcher])
    embed = model.get_model_object("diffusion_model.patch_embedding")
    in_channels = embed.weight.shape[1]
    if in_channels == latent_channels:
        patched.add_object_patch("diffusion_model.patch_embedding",
                                 MotionPatchEmbedding(embed, modules.motion_patch, latent_channels))
    elif in_channels != latent_channels + motion_channels:
        raise ValueError(f"{node}: the model's patch embedding takes {in_channels} channels; expected "
                         f"{latent_channels} (base model) or {latent_channels + motion_channels} (exported "
                         "IM-Animation DiT). Use the matching model file.")
    if modules.dit.clean_reference and not isinstance(model.model, comfy.model_base.WAN22):
        reference = TI2VReferencePatch(noise_mask)
        patched.add_object_patch("process_timestep", reference.process_timestep)
        patched.add_object_patch("scale_latent_inpaint", reference.scale_latent_inpaint)
    if expression is not None:
        for block, index in zip(modules.expression_blocks, modules.dit.expression_block_indices, strict=True):
            patched.set_model_patch_replace(ExpressionPatch(block, expression, skip_frames), "dit", "double_block",
                                            index)
    return patched
