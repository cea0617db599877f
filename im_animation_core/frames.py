"""How driving frames map onto Wan latent frames.

Wan's VAE compresses time causally by 4: a clip of 4k+1 frames gives k+1 latent frames; latent frame 0
holds pixel frame 0 alone and latent frame i >= 1 holds pixel frames 4i-3 .. 4i. Every per-frame signal
(motion tokens, expression tokens) is aligned to latent frames with this one mapping.
"""

from __future__ import annotations

import torch

from .errors import InputError

TEMPORAL_STRIDE = 4


def latent_frame_count(num_frames: int) -> int:
    """Number of latent frames for ``num_frames`` pixel frames (4k+1 -> k+1)."""
    return (num_frames - 1) // TEMPORAL_STRIDE + 1


def valid_length(num_frames: int) -> int:
    """The longest 4k+1 length that fits in ``num_frames`` (0 when num_frames < 1)."""
    if num_frames < 1:
        return 0
    return (num_frames - 1) // TEMPORAL_STRIDE * TEMPORAL_STRIDE + 1


def latent_frame_groups(num_frames: int) -> list[tuple[int, int]]:
    """[start, end) pixel-frame ranges of each latent frame, for a clip of ``num_frames`` = 4k+1 frames."""
    groups = [(0, 1)]
    for i in range(1, latent_frame_count(num_frames)):
        groups.append((TEMPORAL_STRIDE * i - 3, TEMPORAL_STRIDE * i + 1))
    return groups


def latent_frame_times(num_frames: int) -> torch.Tensor:
    """Centre time of each latent frame, in pixel frames: [F_lat] float32 (0, 2.5, 6.5, ...)."""
    return torch.tensor([(s + e - 1) / 2 for s, e in latent_frame_groups(num_frames)], dtype=torch.float32)


def pool_to_latent_frames(per_frame: torch.Tensor) -> torch.Tensor:
    """Average a per-frame signal over each latent frame's pixel frames.

    per_frame: [T,...] with T = 4k+1. Returns [k+1,...] in the same dtype.
    """
    return torch.stack([per_frame[s:e].mean(0) for s, e in latent_frame_groups(per_frame.shape[0])])


def latent_to_pixel_frames(per_latent: torch.Tensor, num_frames: int,
                           weight: torch.Tensor | None = None) -> torch.Tensor:
    """Spread a per-latent-frame signal back over the pixel frames, the inverse direction of
    pool_to_latent_frames.

    per_latent: [F_lat,...] float, one value per latent frame of a clip of ``num_frames`` = 4k+1 frames
        (F_lat = k+1). Each value is taken to hold at its latent frame's centre time (latent_frame_times):
        a pixel frame between two centres gets the linear blend of the two, frames before the first or
        after the last centre the nearest value.
    weight: optional [F_lat,...] >= 0, broadcastable against per_latent, how much each latent frame's value
        is to be trusted (e.g. a detection confidence): the two neighbours are blended in proportion to
        time weight x weight, so a neighbour with weight 0 does not pull the result; where both are 0 the
        plain time blend is used.

    Returns [num_frames,...] float32.
    """
    if per_latent.shape[0] != latent_frame_count(num_frames):
        raise ValueError(f"expected {latent_frame_count(num_frames)} latent frames for {num_frames} pixel frames, "
                         f"got {per_latent.shape[0]}")
    values = per_latent.to(torch.float32)
    centres = latent_frame_times(num_frames)
    t = torch.arange(num_frames, dtype=torch.float32)
    hi = torch.searchsorted(centres, t).clamp(1, max(len(centres) - 1, 1))
    lo = (hi - 1).clamp(min=0)
    if len(centres) == 1:
        hi = lo
    span = (centres[hi] - centres[lo]).clamp(min=1e-6)
    w_hi = ((t - centres[lo]) / span).clamp(0, 1)
    w_hi = w_hi.view(-1, *([1] * (values.ndim - 1)))
    w_lo = 1 - w_hi
    if weight is not None:
        weight = weight.to(torch.float32).clamp(min=0).expand_as(values)
        a, b = w_lo * weight[lo], w_hi * weight[hi]
        total = a + b
        trusted = total > 0
        w_lo = torch.where(trusted, a / total.clamp(min=1e-12), w_lo)
        w_hi = torch.where(trusted, b / total.clamp(min=1e-12), w_hi)
    return w_lo * values[lo] + w_hi * values[hi]


def clip_to_video(clip: torch.Tensor) -> torch.Tensor:
    """[B,T,H,W,C] (or [T,H,W,C]) in [0,1] -> [B,C,T,H,W] in [-1,1], checking the Wan shape rules."""
    if clip.ndim == 4:
        clip = clip.unsqueeze(0)
    if clip.ndim != 5:
        raise InputError(f"clips must be [B,T,H,W,C] in [0,1], got {tuple(clip.shape)}")
    _, t, h, w, _ = clip.shape
    if (t - 1) % 4:
        raise InputError(f"clips need 4k+1 frames (Wan's causal x4 time compression), got {t}")
    if h % 8 or w % 8:
        raise InputError(f"clip height and width must be multiples of 8, got {h}x{w}")
    return clip.permute(0, 4, 1, 2, 3) * 2.0 - 1.0


def video_to_clip(video: torch.Tensor) -> torch.Tensor:
    """[B,C,T,H,W] in [-1,1] -> [B,T,H,W,C] in [0,1], clamped (ComfyUI's VAE Decode convention)."""
    return ((video.float() + 1.0) / 2.0).clamp(0.0, 1.0).permute(0, 2, 3, 4, 1)
