"""Control injection into a Wan DiT: the widened patch embedding, and the motion's reference frame.

The retargeted motion is stacked with the noisy latent along channels (paper section 3.3). Instead of
one widened convolution, the motion channels go through their own convolution whose result is added to
the untouched original one: with zero-initialised motion weights the sum is exactly the original
output, bit for bit, so an untrained adapter provably leaves the base model as it was.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

REFERENCE_FRAMES = 1  # latent frames before the clip: the identity latent (the TI2V first frame)


def motion_with_reference(motion: torch.Tensor) -> torch.Tensor:
    """Retargeted motion [B,C_r,F,h,w] -> [B,C_r,REFERENCE_FRAMES+F,h,w]: zero motion on the reference frame,
    whose latent is the identity image, so that motion and latent frames line up (training and sampling)."""
    return torch.cat([torch.zeros_like(motion[:, :, :REFERENCE_FRAMES]), motion], dim=2)


class MotionPatchEmbedding(nn.Module):
    """The DiT's patch embedding extended with the retargeted-motion channels.

    ``weight`` is the original convolution's weight, so code that reads the input width from
    ``patch_embedding.weight`` (ComfyUI's ``WAN21.concat_cond``) still sees the base model's channels.
    """

    def __init__(self, base: nn.Module, motion_conv: nn.Conv3d, latent_channels: int):
        super().__init__()
        self.base = base
        self.motion_conv = motion_conv
        self.latent_channels = latent_channels

    @property
    def weight(self) -> torch.Tensor:
        return self.base.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B,C_lat+C_r,F,H,W] -> [B,dim,F,H/p,W/p] in x's dtype."""
        out = self.base(x[:, : self.latent_channels].contiguous())
        return add_motion_patch(out, self.motion_conv, x[:, self.latent_channels:])


def add_motion_patch(out: torch.Tensor, motion_conv: nn.Conv3d, motion: torch.Tensor,
                     dtype: torch.dtype | None = None) -> torch.Tensor:
    """The split patch embedding's sum: ``out`` (the base embedding [B,dim,F',H',W']) plus ``motion_conv``
    of ``motion`` [B,C_r,F,H,W], computed in ``dtype`` (default: the convolution's) and added in out's dtype."""
    dtype = dtype or motion_conv.weight.dtype
    w, b = motion_conv.weight.to(dtype), motion_conv.bias.to(dtype)
    extra = F.conv3d(motion.to(dtype), w, b, stride=motion_conv.stride)
    return out + extra.to(out.dtype)


def motion_conv_for(dim: int, motion_channels: int, patch_size=(1, 2, 2)) -> nn.Conv3d:
    """A zero-initialised convolution from the motion channels to the DiT width."""
    conv = nn.Conv3d(motion_channels, dim, kernel_size=patch_size, stride=patch_size)
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)
    return conv


def widen_patch_embedding(base_weight: torch.Tensor, base_bias: torch.Tensor | None, motion_conv: nn.Conv3d):
    """Merge into one widened convolution (for exporting a full DiT that the stock loader reads).

    Returns (weight [dim,C_lat+C_r,*k], bias [dim]). The single convolution sums in a different order,
    so its output matches the split form to float rounding (about 1e-6 relative), not bit for bit."""
    weight = torch.cat([base_weight, motion_conv.weight.to(base_weight)], dim=1)
    bias = motion_conv.bias.to(base_weight) if base_bias is None else base_bias + motion_conv.bias.to(base_bias)
    return weight, bias


def widened_dit_state_dict(dit: dict[str, torch.Tensor], motion_conv: nn.Conv3d) -> dict[str, torch.Tensor]:
    """A Wan DiT state dict (Wan key names) whose ``patch_embedding`` also takes the motion channels.

    ComfyUI's stock loader reads in_dim = latent + C_r from the widened weight; given the retargeted
    motion as extra channels, the model computes what the split form computes (to float rounding)."""
    if "patch_embedding.weight" not in dit:
        raise ValueError("not a Wan DiT state dict: no patch_embedding.weight")
    out = dict(dit)
    out["patch_embedding.weight"], out["patch_embedding.bias"] = widen_patch_embedding(
        dit["patch_embedding.weight"], dit.get("patch_embedding.bias"), motion_conv)
    return out
