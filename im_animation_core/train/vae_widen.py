"""Widen a trained Wan2.1-architecture VAE without changing what it computes (Net2Net-style widening).

A VAE of width ``dim`` becomes one of width ``factor * dim``: every hidden channel is repeated ``factor``
times (tiled: the wide tensor is ``[x; x]`` within each chunk its consumer splits it into), and every weight
that reads hidden channels is divided by ``factor`` so the sum over the copies equals the original. What the
Wan VAE does to channels keeps that exact:
- the channel RMS norm: ||[x; x]|| = sqrt(factor) ||x|| and its sqrt(C) factor grows by the same;
- attention: q.k over the copies is ``factor`` times larger while the softmax scale 1/sqrt(C) shrinks by
  sqrt(factor) only, so q's weights are scaled by 1/sqrt(factor);
- chunked outputs (attention's q|k|v, the temporal upsampler's two frames per input frame) are tiled chunk by
  chunk, so the consumer's ``chunk`` / ``view`` finds the tiled layout in each piece.
The image and latent channels keep their sizes. A small relative noise breaks the symmetry between copies
(identical copies would receive identical gradients and stay copies).

Why: a wider VAE keeps more of the thin limbs, and widening one that is already trained starts from its
figures instead of from scratch (the 128-pixel demo VAE, ``configs/demo128.json``).
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch

from ..wan.vae import Resample, WanVAE


def tile_channels(t: torch.Tensor, axis: int, chunks: int, factor: int) -> torch.Tensor:
    """[.., chunks*S, ..] -> [.., chunks*factor*S, ..]: each chunk repeated ``factor`` times in place."""
    parts = t.chunk(chunks, dim=axis)
    return torch.cat([p for part in parts for p in [part] * factor], dim=axis)


@torch.no_grad()
def widen_wan_vae(model: WanVAE, factor: int, noise: float = 1e-3, seed: int = 0) -> WanVAE:
    """model: a Wan2.1-architecture VAE of width dim -> a new one of width factor * dim whose encode and decode
    equal the original's up to ``noise`` (the relative size of the symmetry-breaking perturbation; 0: exact to
    float rounding)."""
    if not isinstance(factor, int) or factor < 1:
        raise ValueError(f"factor must be a positive integer, got {factor!r}")
    wide = WanVAE(replace(model.config, dim=model.config.dim * factor))
    small_sd = model.state_dict()
    gen = torch.Generator().manual_seed(seed)
    chunk_of = _chunk_layout(model)
    out_sd = {}
    for name, w in wide.state_dict().items():
        s = small_sd[name].float()
        if s.shape == w.shape:
            out_sd[name] = s.clone()
            continue
        t = s
        if t.shape[0] != w.shape[0]:
            t = tile_channels(t, 0, chunk_of.get(name, 1), factor)
        if t.dim() > 1 and t.shape[1] != w.shape[1]:
            t = tile_channels(t, 1, 1, factor) / factor
        if t.shape != w.shape:
            raise ValueError(f"cannot widen {name}: {tuple(s.shape)} -> {tuple(w.shape)} with factor {factor}")
        if name.endswith("to_qkv.weight") or name.endswith("to_qkv.bias"):
            q = t.shape[0] // 3
            t[:q] /= math.sqrt(factor)
        if noise and name.endswith("weight") and t.dim() > 1:
            t = t + noise * t.std() * torch.randn(t.shape, generator=gen)
        out_sd[name] = t
    wide.load_state_dict(out_sd, strict=True)
    return wide.to(dtype=next(model.parameters()).dtype)


def _chunk_layout(model: WanVAE) -> dict[str, int]:
    """Parameter name -> how many hidden tensors its output channels hold side by side."""
    out = {}
    for mod_name, mod in model.named_modules():
        if mod_name.endswith("to_qkv"):
            n = 3
        elif isinstance(mod, Resample) and mod.mode == "upsample3d":
            mod_name, n = mod_name + ".time_conv", 2
        else:
            continue
        out[mod_name + ".weight"] = out[mod_name + ".bias"] = n
    return out
