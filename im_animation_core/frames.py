"""How driving frames map onto Wan latent frames.

Wan's VAE compresses time causally by 4: a clip of 4k+1 frames gives k+1 latent frames; latent frame 0
holds pixel frame 0 alone and latent frame i >= 1 holds pixel frames 4i-3 .. 4i. Every per-frame signal
(motion tokens, expression tokens) is aligned to latent frames with this one mapping.
"""

from __future__ import annotations

import torch

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
