"""Wan DiT files: read and write safetensors with Wan's key names (what ComfyUI's stock loader reads).

A DiT trained with the motion patch is exported with a widened ``patch_embedding`` (input channels =
latent + motion), so the stock loader detects ``in_dim = latent + C_r`` and the pack's sampler uses it as
is. The file's metadata ``im_animation_wan`` (JSON: latent_channels, motion_channels) lets
``load_wan_dit`` split it back for further training; ComfyUI ignores it.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from ..checkpoints import json_metadata, load_safetensors
from ..errors import CheckpointError
from ..injection import motion_conv_for, widen_patch_embedding
from .config import WanDiTConfig, check_supported_variant, strip_prefix
from .model import WanDiT

METADATA_KEY = "im_animation_wan"


def load_wan_state_dict(path: str | Path, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """The Wan DiT state dict of a .safetensors file (a stock Wan file such as wan2.2_ti2v_5B_fp16, a
    full ComfyUI checkpoint's ``model.diffusion_model.*`` part, or a file of ``save_wan_state_dict``),
    keys without prefix, tensors as stored. Raises CheckpointError naming the problem."""
    sd = load_safetensors(path, "Wan DiT", device)
    sd = strip_prefix(sd)
    try:
        check_supported_variant(sd)
        WanDiTConfig.from_state_dict(sd)
    except CheckpointError as e:
        raise CheckpointError(f"'{path}': {e}") from e
    return sd


def file_metadata(path: str | Path) -> dict:
    """The ``im_animation_wan`` metadata of a file written by ``save_wan_state_dict`` ({} for others)."""
    return json_metadata(path, METADATA_KEY, "Wan DiT")


def load_wan_dit(path: str | Path, latent_channels: int | None = None, dtype: torch.dtype | None = None,
                 device: str | torch.device = "cpu") -> WanDiT:
    """A WanDiT from a file. A widened export is split back into patch_embedding + motion_patch when
    ``latent_channels`` is given or recorded in the file's metadata; a stock file loads as is."""
    sd = load_wan_state_dict(path, device=device)
    if latent_channels is None:
        latent_channels = file_metadata(path).get("latent_channels")
    return WanDiT.from_state_dict(sd, latent_channels=latent_channels, dtype=dtype, device=device, copy=False)


def _motion_conv(model: WanDiT, widened: int | nn.Conv3d | None) -> nn.Conv3d | None:
    if widened is None or widened is False:
        return None
    if isinstance(widened, nn.Conv3d):
        conv = widened
    elif model.motion_patch is not None:
        conv = model.motion_patch
        if conv.in_channels != int(widened):
            raise ValueError(f"widened_motion_channels={widened} but the model's motion patch takes "
                             f"{conv.in_channels} channels")
    else:  # no motion weights yet: widen with zeros (the exported model ignores the motion channels)
        conv = motion_conv_for(model.config.dim, int(widened), model.config.patch_size)
    if conv.out_channels != model.config.dim or tuple(conv.kernel_size) != model.config.patch_size:
        raise ValueError(f"motion convolution {tuple(conv.weight.shape)} does not fit the DiT "
                         f"(width {model.config.dim}, patch {model.config.patch_size})")
    return conv


def save_wan_state_dict(model: WanDiT, path: str | Path, widened_motion_channels: int | nn.Conv3d | None = None,
                        dtype: torch.dtype | None = None, check_stock_loader: bool = True) -> dict[str, torch.Tensor]:
    """Write the DiT as a Wan .safetensors file (Wan key names, no prefix) for ComfyUI's "Load Diffusion
    Model"; returns the written state dict.

    widened_motion_channels: None writes the base DiT (``motion_patch`` is not written; keep it in the
    IM-Animation modules file). An int C_r writes ``patch_embedding`` widened to latent + C_r input channels
    from the model's ``motion_patch`` (zeros if it has none); an ``nn.Conv3d`` widens with that convolution
    (e.g. ``IMAnimationModules.motion_patch``).
    dtype: cast floating tensors (e.g. torch.bfloat16 / float16 for a 5B file); default as held.
    check_stock_loader: refuse configs that ComfyUI's detection would build differently
    (``WanDiTConfig.stock_loader_problems``)."""
    config = model.config
    if check_stock_loader and (problems := config.stock_loader_problems()):
        raise ValueError("ComfyUI's stock loader would not rebuild this DiT: " + "; ".join(problems) +
                         ". Pass check_stock_loader=False to write it anyway.")
    with torch.no_grad():
        sd = {k: v.detach() for k, v in model.wan_state_dict().items()}
        conv = _motion_conv(model, widened_motion_channels)
        if conv is not None:
            sd["patch_embedding.weight"], sd["patch_embedding.bias"] = widen_patch_embedding(
                sd["patch_embedding.weight"].float(), sd["patch_embedding.bias"].float(), conv)
        sd = {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).to("cpu").contiguous()
              for k, v in sd.items()}
    info = {"latent_channels": config.in_dim, "motion_channels": conv.in_channels if conv is not None else 0,
            "config": WanDiTConfig.from_state_dict(sd, num_heads=config.num_heads).to_dict()}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_file(sd, str(path), metadata={"format": "wan-dit", METADATA_KEY: json.dumps(info)})
    return sd
