"""The VAE gate of a demo domain: the ground truth through the VAE, scored against itself.

Whatever the VAE cannot represent, no DiT decoding through it can draw, so before any DiT is trained on a
new synthetic domain its VAE must keep the motion: the held-out target clips, encoded (mean latent) and
decoded, are scored with PSNR, SSIM and motion correlation against the clips themselves.
"""

from __future__ import annotations

import math

import torch

from ..frames import clip_to_video, video_to_clip
from .metrics import motion_correlation, psnr, ssim

# The gate of the 128-pixel demo domain (mean over >= 16 held-out pairs).
GATE = {"motion_corr": 0.85, "psnr": 28.0}


def vae_round_trip(vae, clip: torch.Tensor) -> torch.Tensor:
    """vae: a core ``wan.vae.WanVAE``; clip [T,H,W,3] float in [0,1], T = 4k+1 -> the same after encode (mean
    latent) and decode, clamped to [0,1]."""

    with torch.no_grad():
        return video_to_clip(vae.decode(vae.encode(clip_to_video(clip.float()))))[0]


def summary(values: list[float]) -> dict:
    """{"mean", "std", "per_pair"} of per-pair values (std: population, 0 for one pair)."""
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
    return {"mean": mean, "std": std, "per_pair": list(values)}


def vae_gate_scores(vae, pairs) -> dict:
    """pairs: a dataset of SyntheticPairs items (their ``target`` clips are used). Returns {"psnr"|"ssim"|
    "motion_corr": summary} and "passes": whether the means reach GATE."""
    scores = {"psnr": [], "ssim": [], "motion_corr": []}
    for i in range(len(pairs)):
        clip = pairs[i]["target"].float()
        out = vae_round_trip(vae, clip)
        scores["psnr"].append(psnr(out, clip))
        scores["ssim"].append(ssim(out, clip))
        scores["motion_corr"].append(motion_correlation(out, clip))
    result = {k: summary(v) for k, v in scores.items()}
    result["passes"] = all(result[k]["mean"] >= v for k, v in GATE.items())
    return result
