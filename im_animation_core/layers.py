"""Transformer building blocks shared by the retargeting and expression modules."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn


def sinusoidal_frequencies(dim: int, max_period: float = 10000.0, device=None) -> torch.Tensor:
    """[dim // 2] float32: the angular frequency (radians per unit of position) of each cos / sin channel pair
    of sinusoidal_embedding: channel i is cos, channel dim // 2 + i is sin, of frequency i."""
    half = dim // 2
    return torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=device) / half)


def sinusoidal_embedding(positions: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """positions: [N] float (any unit, fractional allowed) -> [N,dim] float32 (cos half, sin half)."""
    freqs = sinusoidal_frequencies(dim, max_period, positions.device)
    args = positions.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


def grid_embedding(height: int, width: int, dim: int, device=None) -> torch.Tensor:
    """2D sinusoidal position of an h x w grid, row-major: [h*w,dim] (half the channels for y, half for x)."""
    ys, xs = torch.meshgrid(torch.arange(height, device=device), torch.arange(width, device=device), indexing="ij")
    half = dim // 2
    return torch.cat([sinusoidal_embedding(ys.flatten(), half), sinusoidal_embedding(xs.flatten(), dim - half)], -1)


class Attention(nn.Module):
    """Multi-head attention (self or cross) on scaled_dot_product_attention."""

    def __init__(self, dim: int, heads: int, context_dim: int | None = None):
        super().__init__()
        if dim % heads:
            raise ValueError(f"width {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(context_dim or dim, 2 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """x: [B,L,dim]; context: [B,S,context_dim] (None: self-attention). Returns [B,L,dim]."""
        context = x if context is None else context
        q = rearrange(self.q(x), "b l (h d) -> b h l d", h=self.heads)
        k, v = rearrange(self.kv(context), "b s (two h d) -> two b h s d", two=2, h=self.heads)
        return self.out(rearrange(F.scaled_dot_product_attention(q, k, v), "b h l d -> b l (h d)"))


class TransformerBlock(nn.Module):
    """Pre-LN self-attention block with a GELU MLP."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, int(dim * mlp_ratio)), nn.GELU(), nn.Linear(int(dim * mlp_ratio), dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))
