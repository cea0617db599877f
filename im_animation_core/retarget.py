"""Mask-token retargeting (paper section 3.2, eq. 4).

The transformer sees three kinds of tokens: the motion tokens of every driving frame (M_video), the
identity image's VAE latent cut into DiT patches (T_ref) and learnable mask tokens, one per identity
patch and latent frame (T_mask). Only the mask-token outputs are kept: they are the retargeted motion,
unpatchified back to the latent grid so that they can be stacked with the noisy latent along channels.
The mask tokens are the bottleneck that keeps the identity image's own pose out of the result.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from einops import rearrange
from torch import nn

from .errors import InputError
from .layers import TransformerBlock, grid_embedding, sinusoidal_embedding

HEATMAP_HEADS = ("upsample", "pixel_shuffle")


@dataclass
class RetargetConfig:
    motion_dim: int = 12  # C_m, channels of one motion token
    motion_tokens: int = 32  # N_m, motion tokens per driving frame
    latent_channels: int = 48  # channels of the identity VAE latent (48: Wan2.2, 16: Wan2.1)
    patch_size: int = 2  # the DiT's spatial patch size
    width: int = 1024
    depth: int = 8
    heads: int = 16
    out_channels: int = 16  # C_r, channels of the retargeted motion map
    heatmap_joints: int = 62  # J of the heatmap head (20 body + 2 x 21 hand joints)
    heatmap_channels: int = 128
    heatmap_upsample: int = 2  # x2 stages: heatmaps at 4x the patch grid (= 2x the latent grid)
    # "upsample": nearest x2 + 3x3 conv stages; "pixel_shuffle": each patch feature predicts its own
    # 2^u x 2^u sub-pixels (compared on the demo data in docs/training.md, "The retargeter plateau").
    heatmap_head: str = "upsample"

    def __post_init__(self) -> None:
        if self.heatmap_head not in HEATMAP_HEADS:
            raise ValueError(f"heatmap_head must be one of {HEATMAP_HEADS}, got '{self.heatmap_head}'")

    def to_dict(self) -> dict:
        return asdict(self)


class RetargetTransformer(nn.Module):
    def __init__(self, config: RetargetConfig):
        super().__init__()
        self.config = c = config
        patch_dim = c.latent_channels * c.patch_size**2
        self.motion_in = nn.Linear(c.motion_dim, c.width)
        self.motion_slot = nn.Parameter(torch.randn(c.motion_tokens, c.width) * 0.02)
        self.ref_norm = nn.LayerNorm(patch_dim)  # raw VAE latents differ in scale per channel
        self.ref_in = nn.Linear(patch_dim, c.width)
        self.mask_token = nn.Parameter(torch.randn(c.width) * 0.02)
        self.type_embedding = nn.Parameter(torch.randn(3, c.width) * 0.02)  # motion, reference, mask
        self.blocks = nn.ModuleList(TransformerBlock(c.width, c.heads) for _ in range(c.depth))
        self.norm_out = nn.LayerNorm(c.width)
        self.out = nn.Linear(c.width, c.out_channels * c.patch_size**2)
        self.heatmap_head = RetargetHeatmapHead(c)

    def forward(
        self,
        motion: torch.Tensor,
        motion_times: torch.Tensor,
        ref_latent: torch.Tensor,
        latent_times: torch.Tensor,
        return_features: bool = False,
    ):
        """Retarget driving motion onto the identity's latent grid.

        motion: [B,T,N_m,C_m] motion tokens of T driving frames.
        motion_times: [T] float, time of each driving frame in pixel frames.
        ref_latent: [B,C,H,W] the identity image's VAE latent (one latent frame), H and W multiples of
            the patch size.
        latent_times: [F] float, centre time of each output latent frame in pixel frames
            (``frames.latent_frame_times``).
        Returns [B,C_r,F,H,W]; with return_features also the mask-token features [B,F,h*w,width].
        """
        c = self.config
        if motion.ndim != 4 or motion.shape[2:] != (c.motion_tokens, c.motion_dim):
            raise InputError(
                f"motion tokens have shape {tuple(motion.shape)}; this retarget model expects "
                f"[B,T,{c.motion_tokens},{c.motion_dim}]: use the motion tokenizer it was trained with"
            )
        if ref_latent.ndim != 4 or ref_latent.shape[1] != c.latent_channels:
            raise InputError(
                f"identity latent has shape {tuple(ref_latent.shape)}; this retarget model expects "
                f"{c.latent_channels} latent channels: use the VAE it was trained with"
            )
        m, ref, pos, time = self.embed(motion, motion_times, ref_latent, latent_times)
        context, queries = self.tokens(m, ref, pos, time)
        x = torch.cat([context, queries], dim=1)
        for block in self.blocks:
            x = block(x)
        feats = self.norm_out(x[:, context.shape[1]:])
        f, (h, w) = latent_times.shape[0], self.grid(ref_latent)
        out = rearrange(
            self.out(feats), "b (f h w) (c p1 p2) -> b c f (h p1) (w p2)",
            f=f, h=h, w=w, p1=c.patch_size, p2=c.patch_size,
        )
        if return_features:
            return out, rearrange(feats, "b (f n) d -> b f n d", f=f)
        return out

    def grid(self, ref_latent: torch.Tensor) -> tuple[int, int]:
        """The identity latent's patch grid (h, w)."""
        p = self.config.patch_size
        return ref_latent.shape[-2] // p, ref_latent.shape[-1] // p

    def embed(self, motion, motion_times, ref_latent, latent_times):
        """Embedded motion tokens [B,T*N_m,D], reference tokens [B,h*w,D], the 2D position of each patch
        [h*w,D] and the time embedding of each latent frame [F,D] (arguments as forward)."""
        c = self.config
        dev = motion.device
        m = self.motion_in(motion) + self.motion_slot
        m = m + sinusoidal_embedding(motion_times.to(dev), c.width)[:, None].to(m.dtype)
        m = rearrange(m, "b t n d -> b (t n) d") + self.type_embedding[0]
        pos = grid_embedding(*self.grid(ref_latent), c.width, device=dev).to(m.dtype)
        ref = rearrange(ref_latent, "b c (h p1) (w p2) -> b (h w) (c p1 p2)", p1=c.patch_size, p2=c.patch_size)
        ref = self.ref_in(self.ref_norm(ref)) + pos + self.type_embedding[1]
        time = sinusoidal_embedding(latent_times.to(dev), c.width).to(m.dtype)
        return m, ref, pos, time

    def tokens(self, m, ref, pos, time):
        """(context, queries): the queries' outputs become the retargeted motion. Here the queries are the
        mask tokens, one per patch and latent frame, and the reference tokens are context."""
        mask = self.mask_token + pos[None] + time[:, None] + self.type_embedding[2]
        mask = rearrange(mask, "f n d -> (f n) d").expand(m.shape[0], -1, -1)
        return torch.cat([m, ref], dim=1), mask


class RetargetHeatmapHead(nn.Module):
    """Mask-token features -> joint heatmaps per latent frame: the supervision of Stage 2 (paper eq. 6) and
    what the preview shows. Convolutions on the patch grid, then config.heatmap_head:
    "upsample": x2 nearest upsampling + 3x3 convolution stages;
    "pixel_shuffle": a 1x1 and a 3x3 convolution, then a 1x1 convolution to J x (2^u)^2 channels that a pixel
    shuffle lays out as the 2^u x 2^u sub-pixels of each patch: where a joint sits inside its patch is a
    channel the head reads directly, not something upsampling recovers from the neighbouring patches."""

    def __init__(self, c: RetargetConfig):
        super().__init__()
        ch, scale = c.heatmap_channels, 2**c.heatmap_upsample
        if c.heatmap_head == "pixel_shuffle":
            self.net = nn.Sequential(nn.Conv2d(c.width, ch, 1), nn.GELU(), nn.Conv2d(ch, ch, 3, padding=1),
                                     nn.GELU(), nn.Conv2d(ch, c.heatmap_joints * scale**2, 1), nn.PixelShuffle(scale))
            return
        layers: list[nn.Module] = [nn.Conv2d(c.width, ch, 1)]
        for _ in range(c.heatmap_upsample):
            layers += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(ch, ch, 3, padding=1),
                       nn.GroupNorm(8, ch), nn.SiLU()]
        layers.append(nn.Conv2d(ch, c.heatmap_joints, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, features: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """features: [B,F,h*w,width] (RetargetTransformer's return_features); grid: (h, w) patch grid
        (RetargetTransformer.grid). Returns [B,F,J,h*2^u,w*2^u] heatmaps."""
        b = features.shape[0]
        x = rearrange(features, "b f (h w) d -> (b f) d h w", h=grid[0], w=grid[1])
        return rearrange(self.net(x), "(b f) j h w -> b f j h w", b=b)
