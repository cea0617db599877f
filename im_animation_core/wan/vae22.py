"""The Wan2.2 video VAE (the one Wan2.2 TI2V-5B works in) in plain PyTorch, state dicts as Wan's.

Parameter names and shapes are those of ComfyUI's ``comfy.ldm.wan.vae2_2.WanVAE`` as its stock loader
builds it for ``wan2.2_vae.safetensors`` (``comfy/sd.py``: ``decoder.middle.0.residual.0.gamma`` plus
``decoder.upsamples.0.upsamples.0.residual.2.weight``; encoder width 160, decoder width 256, 48 latent
channels, dim_mult [1,2,4,4], 2 residual blocks, temporal downsampling [False, True, True]).

Compression 4x16x16: pixels [B,3,T,H,W] in [-1,1] are pixel-shuffled 2x2 into 12 channels, the encoder's
three x2 stages (the last two also x2 in time, causally) give latents [B,48,F,H/16,W/16] with
T = 4(F-1)+1 (latent 0 = frame 0, latent i = frames 4i-3..4i). The decoder mirrors it; layers and the
whole-clip treatment of time (ComfyUI runs in chunks with a feature cache; the results agree) are
described in ``vae22_layers.py``. ``chunk`` > 0 runs chunk by chunk as ComfyUI does (``vae.streaming``),
bounding the memory of long clips.

Never imports ComfyUI.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..checkpoints import load_safetensors
from ..errors import CheckpointError, InputError
from .vae import WAN22_VAE_MARKER, WAN_VAE_MARKER, CausalConv3d, WanVAEBase, WanVAESizes, streaming, strip_vae_prefix
from .vae22_layers import Decoder22, Encoder22, patchify, unpatchify

# What ComfyUI's stock loader builds for a Wan2.2 VAE, whatever the file's tensor shapes (facts section 7).
COMFY22_FIXED = {"dim": 160, "dec_dim": 256, "z_dim": 48, "dim_mult": (1, 2, 4, 4), "num_res_blocks": 2,
                 "temporal_downsample": (False, True, True), "patch_size": 2, "image_channels": 3}


@dataclass(kw_only=True)
class Wan22VAEConfig(WanVAESizes):
    """Sizes of a Wan2.2-architecture VAE. The defaults are the released ``wan2.2_vae.safetensors``."""

    dim: int = 160  # encoder width (stage i: dim * dim_mult[i])
    dec_dim: int = 256  # decoder width
    z_dim: int = 48
    dim_mult: tuple[int, ...] = field(default=(1, 2, 4, 4))
    num_res_blocks: int = 2
    temporal_downsample: tuple[bool, ...] = field(default=(False, True, True))
    patch_size: int = 2
    image_channels: int = 3
    dropout: float = 0.0

    def __post_init__(self):
        sizes = (self.dim, self.dec_dim, self.z_dim, self.num_res_blocks, self.patch_size, self.image_channels)
        if min(sizes) < 1:
            raise ValueError(f"widths, z_dim, num_res_blocks, patch_size and image_channels must be positive: {self}")
        self._check_stages()

    @property
    def pixel_channels(self) -> int:
        """Channels the encoder sees after the pixel shuffle (12 for RGB and patch 2)."""
        return self.image_channels * self.patch_size**2

    @property
    def spatial_ratio(self) -> int:
        return self.patch_size * 2 ** (len(self.dim_mult) - 1)

    def stock_loader_problems(self) -> list[str]:
        """Why ComfyUI's stock VAE loader would build a different model from a state dict of this config
        (empty: it builds exactly this one; it reads no size from the file)."""
        return [f"{k} {getattr(self, k)} != {v}" for k, v in COMFY22_FIXED.items() if getattr(self, k) != v]

    @classmethod
    def from_state_dict(cls, sd: Mapping, image_channels: int = 3) -> Wan22VAEConfig:
        """Sizes from a Wan2.2 VAE state dict (tensors or anything with ``.shape``): the encoder width and
        the patch size from ``encoder.conv1.weight`` (``image_channels`` given, 3 for RGB), stage widths,
        residual blocks and temporal downsampling from the encoder's stages, the decoder width from
        ``decoder.head.0.gamma``, z_dim from ``conv2.weight``. The decoder is assumed to mirror the
        encoder; loading the state dict strictly checks that."""
        sd = strip_vae_prefix(sd)
        check_wan22_vae(sd)
        dim, pixel_channels = (int(s) for s in sd["encoder.conv1.weight"].shape[:2])
        patch = math.isqrt(pixel_channels // image_channels)
        if patch * patch * image_channels != pixel_channels:
            raise CheckpointError(f"encoder.conv1 takes {pixel_channels} channels: not a square pixel shuffle of "
                                  f"{image_channels}-channel images")
        widths, blocks, temporal = [], [], []
        while f"encoder.downsamples.{len(widths)}.downsamples.0.residual.2.weight" in sd:
            p = f"encoder.downsamples.{len(widths)}.downsamples."
            widths.append(int(sd[p + "0.residual.2.weight"].shape[0]))
            n = 0
            while f"{p}{n}.residual.2.weight" in sd:
                n += 1
            blocks.append(n)
            temporal.append(f"{p}{blocks[-1]}.time_conv.weight" in sd)
        if len(widths) < 2 or len(set(blocks)) != 1 or any(w % dim for w in widths) or temporal[-1]:
            raise CheckpointError(f"cannot read the Wan2.2 VAE's encoder stages (width {dim}): widths {widths}, "
                                  f"residual blocks {blocks}, temporal downsampling {temporal}")
        dim_mult = tuple(w // dim for w in widths)
        values = dict(dim=dim, dec_dim=int(sd["decoder.head.0.gamma"].shape[0]) // dim_mult[0],
                      z_dim=int(sd["conv2.weight"].shape[0]), dim_mult=dim_mult, num_res_blocks=blocks[0],
                      temporal_downsample=tuple(temporal[:-1]), patch_size=patch, image_channels=image_channels)
        try:
            return cls(**values)
        except ValueError as e:
            raise CheckpointError(f"unusable Wan2.2 VAE sizes {values}: {e}") from e


def check_wan22_vae(sd: Mapping) -> None:
    if WAN_VAE_MARKER not in sd:
        raise CheckpointError(f"not a Wan VAE state dict (no '{WAN_VAE_MARKER}' key): choose the Wan2.2 VAE file "
                              "(wan2.2_vae.safetensors), not a DiT, text encoder or another VAE")
    if WAN22_VAE_MARKER not in sd:
        raise CheckpointError(f"the state dict is a Wan2.1 VAE (no '{WAN22_VAE_MARKER}' key): load it with "
                              "im_animation_core.wan.vae.load_wan_vae")
    for key in ("encoder.conv1.weight", "decoder.head.0.gamma", "conv2.weight"):
        if key not in sd:
            raise CheckpointError(f"incomplete Wan2.2 VAE state dict: key '{key}' is missing")


class Wan22VAE(WanVAEBase):
    """Wan2.2-architecture video VAE. Pixels are [B,C,T,H,W] in [-1,1] (ComfyUI's ``VAE`` maps [0,1] images
    with x*2-1 before and clamps (y+1)/2 after); latents are [B,z_dim,F,H/16,W/16], raw (the DiT sees
    ``latent_format.Wan22LatentFormat.process_in`` of them)."""

    config_class = Wan22VAEConfig
    family = "Wan2.2 VAE"

    def __init__(self, config: Wan22VAEConfig | None = None, **kwargs):
        super().__init__()
        if config is None:
            config = Wan22VAEConfig(**kwargs)
        elif kwargs:
            raise TypeError("give either a Wan22VAEConfig or keyword sizes, not both")
        self.config = c = config
        common = dict(dim_mult=c.dim_mult, num_res_blocks=c.num_res_blocks, dropout=c.dropout)
        self.encoder = Encoder22(dim=c.dim, temporal_downsample=c.temporal_downsample,
                                 in_channels=c.pixel_channels, out_channels=2 * c.z_dim, **common)
        self.conv1 = CausalConv3d(2 * c.z_dim, 2 * c.z_dim, 1)
        self.conv2 = CausalConv3d(c.z_dim, c.z_dim, 1)
        self.decoder = Decoder22(dim=c.dec_dim, temporal_upsample=c.temporal_downsample[::-1], in_channels=c.z_dim,
                                 out_channels=c.pixel_channels, **common)
        self.chunk = 0  # default of encode / decode's ``chunk``

    def _chunk(self, chunk: int | None) -> int:
        chunk = self.chunk if chunk is None else int(chunk)
        if chunk < 0:
            raise InputError(f"chunk must be >= 0 latent frames (0: the whole clip at once), got {chunk}")
        return chunk

    @staticmethod
    def _streamed(module: nn.Module, x: torch.Tensor, first: int, size: int) -> torch.Tensor:
        """``module`` over frames [0, first), then ``size`` frames at a time, without gradient (vae.streaming)."""
        bounds = [0, min(first, x.shape[2])]
        while bounds[-1] < x.shape[2]:
            bounds.append(min(bounds[-1] + size, x.shape[2]))
        with torch.no_grad(), streaming(module):
            return torch.cat([module(x[:, :, a:b]) for a, b in zip(bounds[:-1], bounds[1:], strict=False)], dim=2)

    def encode_dist(self, video: torch.Tensor, chunk: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, logvar), each [B,z_dim,F,H/16,W/16], of a clip [B,C,T,H,W] in [-1,1]; T = 4k+1 (extra
        trailing frames are dropped, as ComfyUI does), F = k+1.

        chunk (default ``self.chunk``): 0 runs the encoder over the whole clip at once (differentiable); n > 0
        runs it on frame 0, then on 4n frames at a time, carrying each causal layer's past frames (ComfyUI
        runs n = 1): the same result, without gradient, with the activation memory of one chunk."""
        chunk = self._chunk(chunk)
        x = patchify(self._check_video(video).to(self.dtype), self.config.patch_size)
        if chunk:
            x = self._streamed(self.encoder, x, 1, chunk * self.config.temporal_ratio)
        else:
            x = self.encoder(x)
        mu, logvar = self.conv1(x).chunk(2, dim=1)
        return mu, logvar

    def encode(self, video: torch.Tensor, chunk: int | None = None) -> torch.Tensor:
        """The latent mean (what ComfyUI's VAE Encode returns) of a clip [B,C,T,H,W] in [-1,1]."""
        return self.encode_dist(video, chunk)[0]

    def decode(self, z: torch.Tensor, chunk: int | None = None) -> torch.Tensor:
        """Pixels [B,C,4(F-1)+1,16h,16w], nominally in [-1,1] (not clamped), of latents [B,z_dim,F,h,w].
        chunk: as ``encode_dist``, in latent frames (ComfyUI decodes one at a time)."""
        c = self.config
        if z.ndim != 5 or z.shape[1] != c.z_dim or min(z.shape[2:]) < 1:
            raise InputError(f"latents must be [B,{c.z_dim},F,h,w] for this Wan2.2 VAE, got {tuple(z.shape)}")
        chunk = self._chunk(chunk)
        x = self.conv2(z.to(self.dtype))
        x = self._streamed(self.decoder, x, chunk, chunk) if chunk else self.decoder(x)
        return unpatchify(x, c.patch_size)


def load_wan22_vae_state_dict(path: str | Path, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """The Wan2.2 VAE state dict of a .safetensors file (e.g. ``wan2.2_vae.safetensors``), keys without prefix."""
    sd = strip_vae_prefix(load_safetensors(path, "Wan2.2 VAE", device))
    try:
        Wan22VAEConfig.from_state_dict(sd)
    except CheckpointError as e:
        raise CheckpointError(f"'{path}': {e}") from e
    return sd


def load_wan22_vae(path: str | Path, dtype: torch.dtype | None = None, device: str | torch.device = "cpu",
                   chunk: int = 0) -> Wan22VAE:
    """The Wan2.2 VAE of a .safetensors file; ``chunk`` becomes its default for encode / decode."""
    vae = Wan22VAE.from_state_dict(load_wan22_vae_state_dict(path, device=device), dtype=dtype, device=device)
    vae.chunk = vae._chunk(chunk)
    return vae


def load_wan22_vae_chunked(path: str | Path) -> Wan22VAE:
    """``load_wan22_vae`` encoding and decoding one latent frame at a time, as ComfyUI does: for a trainer's
    frozen VAE (config ``vae.factory``), whose memory then does not grow with the clip length."""
    return load_wan22_vae(path, chunk=1)
