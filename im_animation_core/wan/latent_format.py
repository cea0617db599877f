"""Wan latent normalisation, as ComfyUI's sampler applies it (``comfy/latent_formats.py``: ``Wan21``, ``Wan22``).

ComfyUI's samplers work on ``process_in(z) = (z - mean) * scale / std`` of the raw VAE latent z (per
channel, scale 1.0) and hand ``process_out(x) = x * std / scale + mean`` back to VAE Decode. A trainer that
feeds the DiT ``process_in(vae.encode(video))`` therefore trains on latents exactly as ComfyUI samples them.
Same operation order as ComfyUI, so results are bit-identical in the same dtype. Never imports ComfyUI.
"""

from __future__ import annotations

import torch

from ..errors import InputError

WAN21_LATENTS_MEAN = (
    -0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
    0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921,
)
WAN21_LATENTS_STD = (
    2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
    3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160,
)
WAN22_LATENTS_MEAN = (
    -0.2289, -0.0052, -0.1323, -0.2339, -0.2799, 0.0174, 0.1838, 0.1557,
    -0.1382, 0.0542, 0.2813, 0.0891, 0.1570, -0.0098, 0.0375, -0.1825,
    -0.2246, -0.1207, -0.0698, 0.5109, 0.2665, -0.2108, -0.2158, 0.2502,
    -0.2055, -0.0322, 0.1109, 0.1567, -0.0729, 0.0899, -0.2799, -0.1230,
    -0.0313, -0.1649, 0.0117, 0.0723, -0.2839, -0.2083, -0.0520, 0.3748,
    0.0152, 0.1957, 0.1433, -0.2944, 0.3573, -0.0548, -0.1681, -0.0667,
)
WAN22_LATENTS_STD = (
    0.4765, 1.0364, 0.4514, 1.1677, 0.5313, 0.4990, 0.4818, 0.5013,
    0.8158, 1.0344, 0.5894, 1.0901, 0.6885, 0.6165, 0.8454, 0.4978,
    0.5759, 0.3523, 0.7135, 0.6804, 0.5833, 1.4146, 0.8986, 0.5659,
    0.7069, 0.5338, 0.4889, 0.4917, 0.4069, 0.4999, 0.6866, 0.4093,
    0.5709, 0.6065, 0.6415, 0.4944, 0.5726, 1.2042, 0.5458, 1.6887,
    0.3971, 1.0600, 0.3943, 0.5537, 0.5444, 0.4089, 0.7468, 0.7744,
)


class _WanLatentFormat:
    latent_channels: int
    spatial_ratio: int
    temporal_ratio = 4
    _mean: tuple[float, ...]
    _std: tuple[float, ...]

    def __init__(self):
        self.scale_factor = 1.0
        self.latents_mean = torch.tensor(self._mean).view(1, self.latent_channels, 1, 1, 1)
        self.latents_std = torch.tensor(self._std).view(1, self.latent_channels, 1, 1, 1)

    def _stats(self, latent: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if latent.ndim != 5 or latent.shape[1] != self.latent_channels:
            raise InputError(f"{type(self).__name__} needs latents [B,{self.latent_channels},F,h,w], "
                             f"got {tuple(latent.shape)}")
        return (self.latents_mean.to(latent.device, latent.dtype), self.latents_std.to(latent.device, latent.dtype))

    def process_in(self, latent: torch.Tensor) -> torch.Tensor:
        """Raw VAE latent -> what ComfyUI's sampler (and so the DiT) sees."""
        mean, std = self._stats(latent)
        return (latent - mean) * self.scale_factor / std

    def process_out(self, latent: torch.Tensor) -> torch.Tensor:
        """Sampler latent -> raw VAE latent (what VAE Decode is given)."""
        mean, std = self._stats(latent)
        return latent * std / self.scale_factor + mean


class Wan21LatentFormat(_WanLatentFormat):
    """The Wan2.1 VAE's 16 channels (x8 spatial, x4 temporal); also any Wan2.1-architecture VAE of this pack."""

    latent_channels = 16
    spatial_ratio = 8
    _mean, _std = WAN21_LATENTS_MEAN, WAN21_LATENTS_STD


class Wan22LatentFormat(_WanLatentFormat):
    """The Wan2.2 VAE's 48 channels (x16 spatial, x4 temporal), used by Wan2.2 TI2V-5B."""

    latent_channels = 48
    spatial_ratio = 16
    _mean, _std = WAN22_LATENTS_MEAN, WAN22_LATENTS_STD


def latent_format_for(channels: int) -> _WanLatentFormat:
    """The Wan latent format of a latent channel count (16: Wan2.1, 48: Wan2.2)."""
    for cls in (Wan21LatentFormat, Wan22LatentFormat):
        if cls.latent_channels == channels:
            return cls()
    raise InputError(f"no Wan latent format has {channels} channels (Wan2.1: 16, Wan2.2: 48)")
