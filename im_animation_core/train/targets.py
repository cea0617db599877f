"""Supervision targets: joint heatmaps for Stages 1-2 and the flow-matching sample of Stage 3.

Heatmaps
- Stage 1 (eq. 5): the tokenizer sees each driving frame zero-padded to a square and resized
  (tokenizer.preprocess_frames), so its heatmaps are drawn in that padded square: joints are shifted by the
  padding and mapped from the square's side to the heatmap grid.
- Stage 2/3 (eq. 6): the retargeting transformer outputs one map per *latent* frame. Wan's VAE folds pixel
  frames into latent frames causally (latent 0 = frame 0; latent i = frames 4i-3..4i, frames.latent_frame_groups),
  and the transformer is told each latent frame's centre time (frames.latent_frame_times). The target of
  latent frame i is the mean of the Gaussian heatmaps of its pixel frames: frame 0 alone for latent 0, the
  average of 4 maps otherwise. For a joint moving steadily this is centred on the joint's position at the
  group's centre time (the time the transformer is given); for a fast joint it is elongated along the path,
  which is exactly what that latent frame holds. The per-joint weight is the mean visibility over the group.
  Heatmaps are in the target frame's pixel coordinates, mapped onto the heatmap grid (4x the DiT patch
  grid = 2x the latent grid), which covers the same image.

Flow matching, in ComfyUI's convention (comfy/model_sampling.py, CONST + ModelSamplingDiscreteFlow):
  sigma = shift*s / (1 + (shift-1)*s), s ~ U(0,1); x_t = (1-sigma) x0 + sigma eps; the DiT gets timestep
  sigma*1000 and predicts v = eps - x0, since ComfyUI's sampler takes denoised = x_t - sigma * output.
"""

from __future__ import annotations

import torch
from einops import rearrange

from ..frames import latent_frame_groups
from ..heatmaps import render_heatmaps
from ..tokenizer.preprocess import pad_amounts

WAN22_SHIFT = 5.0  # Wan2.2 TI2V's official shift (facts section 3)
WAN21_SHIFT = 8.0  # ComfyUI's default for Wan2.1-family models, and the shift of this pack's workflows


def square_frame_heatmaps(xy: torch.Tensor, visible: torch.Tensor, frame_hw: tuple[int, int],
                          size: tuple[int, int], sigma: float) -> torch.Tensor:
    """Stage-1 targets. xy [N,J,2] pixels of an HxW frame; visible [N,J] -> [N,J,*size] heatmaps drawn in
    the zero-padded square the tokenizer sees."""
    h, w = frame_hw
    left, _, top, _ = pad_amounts(h, w)
    side = max(h, w)
    shifted = xy.float() + xy.new_tensor([float(left), float(top)])
    return render_heatmaps(shifted, visible.bool(), size, sigma=sigma, in_size=(side, side))


def latent_frame_heatmaps(xy: torch.Tensor, visible: torch.Tensor, frame_hw: tuple[int, int],
                          size: tuple[int, int], sigma: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Stage-2/3 targets. xy [B,T,J,2] pixels of HxW frames (T = 4k+1), visible [B,T,J] ->
    (heatmaps [B,F,J,*size] averaged over each latent frame's pixel frames, weight [B,F,J] mean visibility)."""
    b, t = xy.shape[:2]
    maps = render_heatmaps(rearrange(xy.float(), "b t j c -> (b t) j c"), rearrange(visible.bool(), "b t j -> (b t) j"),
                           size, sigma=sigma, in_size=frame_hw)
    maps = rearrange(maps, "(b t) j h w -> b t j h w", b=b)
    vis = visible.float()
    groups = latent_frame_groups(t)
    heat = torch.stack([maps[:, s:e].mean(1) for s, e in groups], dim=1)
    weight = torch.stack([vis[:, s:e].mean(1) for s, e in groups], dim=1)
    return heat, weight


def shift_sigma(s: torch.Tensor, shift: float) -> torch.Tensor:
    """ComfyUI's time_snr_shift: shift*s / (1 + (shift-1)*s)."""
    if shift == 1.0:
        return s
    return shift * s / (1 + (shift - 1) * s)


def default_shift(latent_channels: int) -> float:
    return WAN22_SHIFT if latent_channels == 48 else WAN21_SHIFT


def sample_sigmas(batch: int, shift: float, generator: torch.Generator) -> torch.Tensor:
    """[B] float32 sigmas in (0,1]: s uniform on (0,1] (as ComfyUI's 1000 timesteps t/1000 span it), shifted."""
    s = 1.0 - torch.rand(batch, generator=generator)
    return shift_sigma(s, shift)


def mix_seed(*parts: int) -> int:
    """A 63-bit seed from integers (run seed, step, sample index, ...): different inputs give unrelated
    generators, equal inputs equal ones (splitmix64 finaliser)."""
    x = 0x243F6A8885A308D3
    for p in parts:
        x = (x ^ (int(p) & ((1 << 64) - 1))) * 0x9E3779B97F4A7C15 & ((1 << 64) - 1)
        x ^= x >> 31
        x = (x * 0xBF58476D1CE4E5B9) & ((1 << 64) - 1)
        x ^= x >> 29
    return x & 0x7FFF_FFFF_FFFF_FFFF


def sample_noise(seed: int, indices: list[int], shape: tuple[int, ...], shift: float, draws: int = 1
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample flow-matching draws: (sigma [D*B], noise [D*B,*shape]) float32 on the CPU, ordered draw-major
    (row d*B + b is draw d of sample b), draw d of sample b from a generator seeded by (seed, indices[b]) for
    d = 0 and (seed, indices[b], d) after. A sample gets the same draws whatever batch or process it is in, so
    a run on N processes computes what one process with the N-times batch computes."""
    sigmas, noises = [], []
    for d in range(draws):
        for index in indices:
            g = torch.Generator().manual_seed(mix_seed(seed, index) if d == 0 else mix_seed(seed, index, d))
            sigmas.append(sample_sigmas(1, shift, g))
            noises.append(torch.randn(shape, generator=g))
    return torch.cat(sigmas), torch.stack(noises)


def noisy_latent(x0: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """x_t = (1-sigma) x0 + sigma eps with sigma [B] broadcast (ComfyUI's CONST.noise_scaling)."""
    s = sigma.to(x0).view(-1, *([1] * (x0.ndim - 1)))
    return (1 - s) * x0 + s * noise
