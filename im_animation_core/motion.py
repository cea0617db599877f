"""The motion data that flows between nodes."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class MotionTokens:
    """Quantised motion tokens of a driving clip.

    tokens: [T,N_m,C_m] float32 on the CPU, the l2-normalised codebook vectors (N_m = 32, C_m = 12 for
        the released encoder), one row of N_m tokens per kept driving frame.
    indices: [T,N_m] int64 codebook indices.
    frame_indices: [T] int64, the index in the source clip of each kept frame.
    fps: frames per second of the kept frames (source fps / stride), 0 when unknown.
    source_frame_count: number of frames in the clip the tokens came from.
    """

    tokens: torch.Tensor
    indices: torch.Tensor
    frame_indices: torch.Tensor
    fps: float
    source_frame_count: int

    def __len__(self) -> int:
        return int(self.tokens.shape[0])
