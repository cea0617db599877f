"""Widen a trained Wan DiT, and the modules' weights that live at its width, without changing what they compute.

A DiT of width ``dim`` (``dim // 128`` heads of 128 channels, FFN ``ffn_dim``) becomes one of width
``factor * dim`` with ``factor`` times the heads and the FFN: every hidden channel is repeated ``factor`` times
(tiled: ``[x; x]`` within each chunk its consumer splits it into), so each new head is a copy of an old one
and keeps its 128 channels, its rotary frequencies and its softmax scale. Every weight that reads hidden
channels gets copies that sum to the original, ``W / factor + n_k`` with noise ``n_k`` summing to zero over
the copies: the sum over tiled inputs is exactly ``W x`` whatever the noise, and the noise makes the copies
receive different gradients (equal halves would stay equal forever). What Wan does to hidden channels keeps
the tiling exact: LayerNorm and the RMS norms of q and k see the same mean and mean square over ``[x; x]`` as
over ``x``; the modulation tables and the time projection's six chunks are tiled chunk by chunk.

The image-side sizes (latent channels, patch, text width, frequency embedding) stay. The retargeter and the
expression encoder do not depend on the DiT's width and are left as they are; the expression blocks
(cross-attention at the DiT's width) and the motion patch (a patch embedding) are widened the same way.

Why: the demo DiT's motion correlation flattens with updates at dim 128 (``docs/training.md``); widening the
trained one adds capacity while starting from its figures instead of from scratch.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from ..modules import DiTSpec, IMAnimationModules
from ..wan.config import WanDiTConfig
from ..wan.model import WanDiT
from .vae_widen import tile_channels

WIDEN_SEED = 0  # the symmetry-breaking noise's seed when a run widens its DiT (dit.width_factor): fixed, so the
# widened start is the same in every run of a config

# parameters whose output axis holds several hidden vectors side by side: each chunk is tiled on its own
_OUTPUT_CHUNKS = {"time_projection.1": 6, "attn.kv": 2}


def _chunks(name: str) -> int:
    return next((n for key, n in _OUTPUT_CHUNKS.items() if name.startswith(key) or f".{key}." in f".{name}"), 1)


def _split_reader(t: torch.Tensor, factor: int, noise: float, gen: torch.Generator) -> torch.Tensor:
    """A weight [out, in, ...] reading hidden channels -> [out, factor*in, ...]: ``factor`` copies of t/factor
    plus noise that sums to zero over the copies (relative size ``noise`` of t's spread)."""
    copies = [t / factor] * factor
    if noise and factor > 1:
        n = torch.randn((factor, *t.shape), generator=gen, dtype=torch.float32).to(t.dtype)
        n = (n - n.mean(0, keepdim=True)) * (noise * float(t.float().std()))
        copies = [c + n[k] for k, c in enumerate(copies)]
    return torch.cat(copies, dim=1)


def widen_state(small: dict[str, torch.Tensor], wide_shapes: dict[str, torch.Size], factor: int,
                noise: float, seed: int) -> dict[str, torch.Tensor]:
    """The tensors of a model at ``factor`` times the width, from the narrow model's (same names).

    Axis 0 grown: tiled (chunk by chunk where ``_OUTPUT_CHUNKS`` says); axis 1 grown: split into copies that
    sum to the original (``_split_reader``); a modulation table [1, n, dim]: tiled on its last axis."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for name, want in wide_shapes.items():
        t = small[name]
        if t.shape == want:
            out[name] = t.clone()
            continue
        if name.endswith("modulation"):
            t = tile_channels(t, -1, 1, factor)
        else:
            if t.shape[0] != want[0]:
                t = tile_channels(t, 0, _chunks(name), factor)
            if t.dim() > 1 and t.shape[1] != want[1]:
                t = _split_reader(t, factor, noise, gen)
        if t.shape != want:
            raise ValueError(f"cannot widen {name}: {tuple(small[name].shape)} -> {tuple(want)} by {factor}")
        out[name] = t.contiguous()
    return out


def widened_config(c: WanDiTConfig, factor: int) -> WanDiTConfig:
    """The sizes of ``c`` widened ``factor`` times: width, heads and FFN."""
    return replace(c, dim=c.dim * factor, ffn_dim=c.ffn_dim * factor, num_heads=c.num_heads * factor)


def _check_factor(factor: int) -> None:
    if not isinstance(factor, int) or factor < 1:
        raise ValueError(f"the width factor must be a positive integer, got {factor!r}")


@torch.no_grad()
def widen_wan_dit(model: WanDiT, factor: int, noise: float = 0.5, seed: int = 0) -> WanDiT:
    """model: a WanDiT of width dim -> a new one of width factor * dim (heads and FFN likewise) computing the
    same outputs up to float rounding. noise: the copies' symmetry-breaking spread relative to each weight's
    (it does not change the outputs)."""
    _check_factor(factor)
    wide_cfg = widened_config(model.config, factor)
    channels = model.motion_patch.in_channels if model.motion_patch is not None else 0
    with torch.device("meta"):
        wide = WanDiT(wide_cfg, motion_channels=channels, init=False)
    shapes = {k: v.shape for k, v in wide.state_dict().items()}
    wide.load_state_dict(widen_state(model.state_dict(), shapes, factor, noise, seed), strict=True, assign=True)
    wide.checkpoint_blocks = model.checkpoint_blocks
    return wide


@torch.no_grad()
def widen_modules(modules: IMAnimationModules, factor: int, noise: float = 0.5, seed: int = 0) -> IMAnimationModules:
    """The modules for a DiT widened by ``factor`` (``widen_wan_dit``): expression blocks and motion patch at the
    new width, with the same outputs tiled; everything else as it was."""
    _check_factor(factor)
    d = modules.dit
    spec = DiTSpec(dim=d.dim * factor, heads=d.heads * factor, depth=d.depth, latent_channels=d.latent_channels,
                   clean_reference=d.clean_reference)
    with torch.device("meta"):
        wide = IMAnimationModules(modules.retarget.config, modules.expression_encoder.config, spec)
    # The width-free parts are the same objects (whatever retargeting variant the file holds); the rest is new.
    wide.retarget, wide.expression_encoder = modules.retarget, modules.expression_encoder
    grown = ("expression_blocks.", "motion_patch.")
    shapes = {k: v.shape for k, v in wide.state_dict().items() if k.startswith(grown)}
    state = widen_state(modules.state_dict(), shapes, factor, noise, seed + 1)
    missing, unexpected = wide.load_state_dict(state, strict=False, assign=True)
    if unexpected or any(k.startswith(grown) for k in missing):
        raise ValueError(f"cannot widen the modules: missing {missing[:4]}, unexpected {unexpected[:4]}")
    wide.clip_frames = modules.clip_frames
    return wide.train(modules.training)
