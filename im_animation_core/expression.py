"""Expression control: an encoder over face crops and the cross-attention blocks that feed it to the DiT.

The paper uses X-NeMo's expression encoder, whose weights are not public; this encoder is ours, trained
by this project. The blocks follow the paper: frame-by-frame cross-attention from the video tokens of
each latent frame to that frame's expression tokens, added residually after every 6th DiT block, with a
zero-initialised output projection so that an untrained adapter leaves the base model unchanged.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import kornia
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from .errors import InputError
from .layers import Attention


@dataclass
class ExpressionConfig:
    crop_size: int = 128  # face crops are resized to crop_size x crop_size
    width: int = 512  # channels of one expression token
    tokens: int = 16  # expression tokens per frame (a 4x4 grid of the crop)
    base_channels: int = 32

    def to_dict(self) -> dict:
        return asdict(self)


def _conv_stage(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=2, padding=1), nn.GroupNorm(8, cout), nn.SiLU(),
                         nn.Conv2d(cout, cout, 3, padding=1), nn.GroupNorm(8, cout), nn.SiLU())


class ExpressionEncoder(nn.Module):
    """Face crop -> expression tokens."""

    def __init__(self, config: ExpressionConfig):
        super().__init__()
        self.config = c = config
        chans = [c.base_channels * m for m in (1, 2, 4, 8)]
        stages, cin = [], 3
        for ch in chans:
            stages.append(_conv_stage(cin, ch))
            cin = ch
        self.stages = nn.Sequential(*stages)
        self.grid = int(c.tokens**0.5)
        if self.grid**2 != c.tokens:
            raise ValueError(f"expression tokens must be a square number, got {c.tokens}")
        self.proj = nn.Linear(cin, c.width)
        self.pos = nn.Parameter(torch.randn(c.tokens, c.width) * 0.02)
        self.norm = nn.LayerNorm(c.width)

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        """crops: [N,3,S,S] float RGB in [0,1] -> [N,tokens,width]."""
        feat = F.adaptive_avg_pool2d(self.stages(crops * 2 - 1), self.grid)
        return self.norm(self.proj(rearrange(feat, "n c h w -> n (h w) c")) + self.pos)


def crop_faces(frames: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """frames: [N,H,W,3] float in [0,1]; boxes: [N,4] x0,y0,x1,y1 pixels -> [N,3,size,size] crops.

    Boxes are made square around their centre so faces keep their aspect ratio."""
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise InputError(f"driving frames have shape {tuple(frames.shape)}; expected [N,H,W,3] RGB frames")
    cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    half = torch.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]).clamp(min=4) / 2
    corners = torch.stack([
        torch.stack([cx - half, cy - half], -1), torch.stack([cx + half, cy - half], -1),
        torch.stack([cx + half, cy + half], -1), torch.stack([cx - half, cy + half], -1),
    ], 1)
    images = rearrange(frames, "n h w c -> n c h w").float()
    return kornia.geometry.transform.crop_and_resize(images, corners.to(images), (size, size))


class ExpressionBlock(nn.Module):
    """Frame-by-frame cross-attention from DiT video tokens to expression tokens, added residually."""

    def __init__(self, dim: int, heads: int, expression_width: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(dim, heads, context_dim=expression_width)
        nn.init.zeros_(self.attn.out.weight)
        nn.init.zeros_(self.attn.out.bias)

    def forward(self, x: torch.Tensor, expression: torch.Tensor, skip_frames: int = 0,
                inplace: bool = False) -> torch.Tensor:
        """x: [B,F*L,dim] video tokens, frame-major (F latent frames of L tokens each).
        expression: [F-skip_frames,K,width] tokens for the latent frames after the first ``skip_frames``
        (those, e.g. a reference frame, get no expression), the same for every sample, or [B,F-skip_frames,K,
        width] per sample. Returns x of the same shape and dtype.
        inplace: add the result into x itself when no gradient is recorded (sampling, where x is a DiT block's
        fresh output that nothing else holds), saving a copy of every video token per call."""
        frames = expression.shape[-3] + skip_frames
        if x.shape[1] % frames:
            raise InputError(
                f"{x.shape[1]} video tokens do not split into {frames} latent frames: the expression features "
                "were made for a different video length"
            )
        dtype = self.attn.q.weight.dtype
        b = x.shape[0]
        per_frame = rearrange(x, "b (f l) d -> b f l d", f=frames)
        driven = rearrange(per_frame[:, skip_frames:], "b f l d -> (b f) l d").to(dtype)
        if expression.dim() == 4:
            if expression.shape[0] != b:
                raise InputError(f"expression tokens for {expression.shape[0]} samples, video tokens for {b}")
            ctx = rearrange(expression.to(driven), "b f k w -> (b f) k w")
        else:
            ctx = expression.to(driven).repeat(b, 1, 1)
        delta = rearrange(self.attn(self.norm(driven), ctx), "(b f) l d -> b f l d", b=b).to(x.dtype)
        if inplace and not torch.is_grad_enabled() and x.is_contiguous():  # per_frame is then a view of x
            # add_ on the view: `view[idx] += d` would also copy the sum back onto itself through __setitem__
            per_frame[:, skip_frames:].add_(delta)
            return x
        driven_out = per_frame[:, skip_frames:] + delta
        return rearrange(torch.cat([per_frame[:, :skip_frames], driven_out], dim=1), "b f l d -> b (f l) d")
