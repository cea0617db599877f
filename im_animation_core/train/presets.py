"""Tiny configurations: every stage in seconds on a CPU (smoke runs, tests, trying out the pipeline).

``tiny_config_dict(stage, output_dir)`` gives a JSON-ready config dict (64x64 clips of 5 frames, a 1-layer
tokenizer, a 6-layer dim-128 Wan DiT on 16-channel latents: the smallest DiT with one expression block);
``write_tiny_vae(path)`` writes a random Wan2.1-architecture VAE of dim 8 that such configs can point at.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch

TINY_TOKENIZER = {"width": 64, "layers": 1, "heads": 1, "image_size": 64, "codebook_size": 64}
TINY_HEATMAP_HEAD = {"width": 64, "depth": 1, "channels": [16, 8, 8]}
TINY_DIT = {"dim": 128, "ffn_dim": 256, "num_layers": 6, "in_dim": 16, "out_dim": 16, "text_dim": 4096}
TINY_MODULES = {"retarget": {"width": 64, "depth": 1, "heads": 2, "out_channels": 4, "heatmap_channels": 16},
                "expression": {"crop_size": 32, "width": 32, "tokens": 4, "base_channels": 8}}


def deep_update(base: dict, updates: dict) -> dict:
    """``base`` with ``updates`` merged in recursively (nested dicts merged, other values replaced)."""
    out = copy.deepcopy(base)
    for k, v in updates.items():
        out[k] = deep_update(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def tiny_config_dict(stage: str, output_dir: str | Path, frames: int = 5, size: int = 64,
                     vae_path: str | Path = "", **overrides: Any) -> dict:
    cfg: dict[str, Any] = {
        "output_dir": str(output_dir), "seed": 0, "steps": 4, "batch_size": 2, "log_every": 2, "save_every": 2,
        "progress": False, "device": "cpu", "optim": {"lr": 1e-3},
        "data": {"num_samples": 8, "frames": frames, "size": size},
        "tokenizer": {"config": dict(TINY_TOKENIZER)}, "heatmap_sigma": 1.0,
    }
    if stage == "stage1":
        cfg["heatmap_head"] = dict(TINY_HEATMAP_HEAD)
    else:
        cfg.update(dit=dict(TINY_DIT), modules=copy.deepcopy(TINY_MODULES), vae={"path": str(vae_path)})
    if stage == "stage3":
        cfg["dit_lr"] = 1e-3
    return deep_update(cfg, overrides)


def tiny_vae(z_dim: int = 16, seed: int = 0):
    """A random Wan2.1-architecture VAE of dim 8 (x8 spatial, x4 temporal); z_dim 48 mimics Wan2.2's channels."""
    from ..wan.vae import WanVAE

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return WanVAE(dim=8, z_dim=z_dim).eval()


def write_tiny_vae(path: str | Path, seed: int = 0) -> Path:
    from ..wan.vae import save_wan_vae

    return save_wan_vae(tiny_vae(16, seed), path)
