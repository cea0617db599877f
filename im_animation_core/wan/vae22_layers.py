"""Layers of the Wan2.2 VAE that the Wan2.1 VAE (``vae.py``) does not have.

The Wan2.2 VAE reuses Wan2.1's causal convolutions, RMS norms, residual and attention blocks and resampling
layers, and adds:

- a 2x2 pixel shuffle of the input into channels (``patchify``: [B,3,T,H,W] -> [B,12,T,H/2,W/2]) and its
  inverse on the output, so the encoder's three x2 stages give x16 in all;
- stages whose output adds a parameter-free shortcut: ``AvgDown`` (encoder: each (t,2,2) block of a channel
  folded into channels, then groups of consecutive channels averaged down to the stage's width) and
  ``DupUp`` (decoder: channels repeated, then unfolded into (t,2,2) blocks);
- decoder upsampling that keeps the width (``Resample(..., keep_width=True)``).

Time is handled as in ``vae.py``: every layer runs once over the whole clip, causally. ComfyUI instead runs
the encoder on frame 0, then on chunks of 4 frames, and the decoder latent by latent, with a per-layer
cache of the last frames. For the two new shortcuts the whole-clip equivalent is:

- ``AvgDown`` with temporal factor 2 pads the clip's 1+2k frames with one zero frame in the past, so output
  frame 0 averages frame 0 with zeros (ComfyUI's first one-frame chunk is padded the same way) and output
  frame i the frames 2i-1, 2i;
- ``DupUp`` with temporal factor 2 doubles every frame and drops the first copy of frame 0 (ComfyUI's first
  chunk, flagged ``first_chunk``, drops it): n frames -> 2n-1.

tests/unit/test_wan_vae22.py checks both against ComfyUI's chunked module. Never imports ComfyUI.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange, reduce, repeat
from torch import nn

from .vae import AttentionBlock, CausalConv3d, Resample, ResidualBlock, RMSNorm, _run


def patchify(video: torch.Tensor, patch: int) -> torch.Tensor:
    """[B,C,T,H,W] -> [B,C*patch*patch,T,H/patch,W/patch]; channel order (c, column offset, row offset)."""
    return rearrange(video, "b c t (h q) (w r) -> b (c r q) t h w", q=patch, r=patch)


def unpatchify(x: torch.Tensor, patch: int) -> torch.Tensor:
    """Inverse of ``patchify``."""
    return rearrange(x, "b (c r q) t h w -> b c t (h q) (w r)", q=patch, r=patch)


class AvgDown(nn.Module):
    """Parameter-free downsampling shortcut: [B,in,T,H,W] -> [B,out,T',H/s,W/s], T' = ceil(T/t_factor)
    (zero frames padded in the past). Each output channel is the mean of ``in*t*s*s/out`` consecutive
    channels of the folded tensor."""

    def __init__(self, in_dim: int, out_dim: int, t_factor: int, s_factor: int):
        super().__init__()
        folded = in_dim * t_factor * s_factor * s_factor
        if folded % out_dim:
            raise ValueError(f"AvgDown: {in_dim} channels folded by {t_factor}x{s_factor}x{s_factor} do not "
                             f"average down to {out_dim}")
        self.out_dim, self.t_factor, self.s_factor = out_dim, t_factor, s_factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad_t = -x.shape[2] % self.t_factor
        if pad_t:
            x = F.pad(x, (0, 0, 0, 0, pad_t, 0))
        x = rearrange(x, "b c (t pt) (h ph) (w pw) -> b (c pt ph pw) t h w",
                      pt=self.t_factor, ph=self.s_factor, pw=self.s_factor)
        return reduce(x, "b (o g) t h w -> b o t h w", "mean", o=self.out_dim)


class DupUp(nn.Module):
    """Parameter-free upsampling shortcut: [B,in,T,H,W] -> [B,out,t*T-(t-1),H*s,W*s] (the first t-1 copies
    of frame 0 dropped: frame 0 stays one frame, as in the main path)."""

    def __init__(self, in_dim: int, out_dim: int, t_factor: int, s_factor: int):
        super().__init__()
        unfolded = out_dim * t_factor * s_factor * s_factor
        if unfolded % in_dim:
            raise ValueError(f"DupUp: {in_dim} channels do not repeat into {out_dim} channels of "
                             f"{t_factor}x{s_factor}x{s_factor} blocks")
        self.repeats = unfolded // in_dim
        self.t_factor, self.s_factor = t_factor, s_factor
        self.stream: dict | None = None  # see ``vae.streaming``: only the first chunk drops frame 0's copies

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = repeat(x, "b c t h w -> b (c r) t h w", r=self.repeats)
        x = rearrange(x, "b (o pt ph pw) t h w -> b o (t pt) (h ph) (w pw)",
                      pt=self.t_factor, ph=self.s_factor, pw=self.s_factor)
        first = not self.stream
        if self.stream is not None:
            self.stream["started"] = True
        return x[:, :, self.t_factor - 1:] if first else x


class DownStage(nn.Module):
    """Encoder stage: ``blocks`` residual blocks in_dim -> out_dim, then (if ``spatial``) x2 downsampling,
    x2 in time too if ``temporal``; plus the ``AvgDown`` shortcut of the stage's input (the identity when
    the stage does not downsample and keeps the width)."""

    def __init__(self, in_dim: int, out_dim: int, blocks: int, spatial: bool, temporal: bool, dropout: float):
        super().__init__()
        temporal = temporal and spatial  # ComfyUI's last stage never downsamples, in time neither
        self.avg_shortcut = AvgDown(in_dim, out_dim, 2 if temporal else 1, 2 if spatial else 1)
        layers: list[nn.Module] = [ResidualBlock(in_dim if i == 0 else out_dim, out_dim, dropout)
                                   for i in range(blocks)]
        if spatial:
            layers.append(Resample(out_dim, "downsample3d" if temporal else "downsample2d"))
        self.downsamples = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, use_checkpoint: bool = False) -> torch.Tensor:
        return _run(self.downsamples, x, use_checkpoint) + self.avg_shortcut(x)


class UpStage(nn.Module):
    """Decoder stage: ``blocks`` residual blocks in_dim -> out_dim, then (if ``spatial``) x2 upsampling
    that keeps the width, x2 in time too if ``temporal``; plus the ``DupUp`` shortcut of the stage's input
    (no shortcut when the stage does not upsample)."""

    def __init__(self, in_dim: int, out_dim: int, blocks: int, spatial: bool, temporal: bool, dropout: float):
        super().__init__()
        temporal = temporal and spatial
        self.avg_shortcut = DupUp(in_dim, out_dim, 2 if temporal else 1, 2) if spatial else None
        layers: list[nn.Module] = [ResidualBlock(in_dim if i == 0 else out_dim, out_dim, dropout)
                                   for i in range(blocks)]
        if spatial:
            layers.append(Resample(out_dim, "upsample3d" if temporal else "upsample2d", keep_width=True))
        self.upsamples = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, use_checkpoint: bool = False) -> torch.Tensor:
        y = _run(self.upsamples, x, use_checkpoint)
        return y if self.avg_shortcut is None else y + self.avg_shortcut(x)


def _middle(dim: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(ResidualBlock(dim, dim, dropout), AttentionBlock(dim), ResidualBlock(dim, dim, dropout))


def _head(dim: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(RMSNorm(dim), nn.SiLU(), CausalConv3d(dim, out_channels, 3, padding=1))


class Encoder22(nn.Module):
    """Patchified pixels [B,in_channels,T,H,W] -> [B,out_channels,F,H/8,W/8] (F latent frames, T = 4(F-1)+1
    with the default temporal downsampling). Stage widths ``dim * dim_mult[i]``."""

    def __init__(self, *, dim: int, dim_mult, num_res_blocks: int, temporal_downsample, in_channels: int,
                 out_channels: int, dropout: float):
        super().__init__()
        dims = [dim * m for m in (1, *dim_mult)]
        last = len(dim_mult) - 1
        self.conv1 = CausalConv3d(in_channels, dims[0], 3, padding=1)
        self.downsamples = nn.Sequential(*(
            DownStage(dims[i], dims[i + 1], num_res_blocks, spatial=i < last,
                      temporal=i < last and temporal_downsample[i], dropout=dropout)
            for i in range(len(dim_mult))))
        self.middle = _middle(dims[-1], dropout)
        self.head = _head(dims[-1], out_channels)
        self.gradient_checkpointing = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        for stage in self.downsamples:
            x = stage(x, self.gradient_checkpointing)
        x = _run(self.middle, x, self.gradient_checkpointing)
        return self.head(x)


class Decoder22(nn.Module):
    """[B,in_channels,F,h,w] -> patchified pixels [B,out_channels,4(F-1)+1,8h,8w] with the default temporal
    upsampling (the encoder's, reversed). Stage widths ``dim * dim_mult[i]``, widest first."""

    def __init__(self, *, dim: int, dim_mult, num_res_blocks: int, temporal_upsample, in_channels: int,
                 out_channels: int, dropout: float):
        super().__init__()
        mult = tuple(dim_mult)[::-1]
        dims = [dim * m for m in (mult[0], *mult)]
        last = len(mult) - 1
        self.conv1 = CausalConv3d(in_channels, dims[0], 3, padding=1)
        self.middle = _middle(dims[0], dropout)
        self.upsamples = nn.Sequential(*(
            UpStage(dims[i], dims[i + 1], num_res_blocks + 1, spatial=i < last,
                    temporal=i < last and temporal_upsample[i], dropout=dropout)
            for i in range(len(mult))))
        self.head = _head(dims[-1], out_channels)
        self.gradient_checkpointing = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        x = _run(self.middle, x, self.gradient_checkpointing)
        for stage in self.upsamples:
            x = stage(x, self.gradient_checkpointing)
        return self.head(x)
