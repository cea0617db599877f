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


MOTION_TOKENS_FORMAT = "im-animation-motion-tokens"


def save_motion_tokens(motion: MotionTokens, path: str) -> None:
    """Write motion tokens as safetensors (tokens, indices, frame_indices; fps and counts in the metadata)."""
    from safetensors.torch import save_file

    save_file({"tokens": motion.tokens.contiguous(), "indices": motion.indices.contiguous(),
               "frame_indices": motion.frame_indices.contiguous()}, path,
              metadata={"format": MOTION_TOKENS_FORMAT, "fps": repr(float(motion.fps)),
                        "source_frame_count": str(motion.source_frame_count)})


def load_motion_tokens(path: str) -> MotionTokens:
    """Read a file written by save_motion_tokens. Raises InputError when it is something else."""
    from safetensors import SafetensorError, safe_open

    from .errors import InputError

    try:
        with safe_open(path, framework="pt") as f:
            meta = f.metadata() or {}
            if meta.get("format") != MOTION_TOKENS_FORMAT:
                raise InputError(f"'{path}' is not a motion tokens file (written by Save Motion Tokens)")
            return MotionTokens(tokens=f.get_tensor("tokens"), indices=f.get_tensor("indices"),
                                frame_indices=f.get_tensor("frame_indices"), fps=float(meta["fps"]),
                                source_frame_count=int(meta["source_frame_count"]))
    except (SafetensorError, OSError, KeyError, ValueError) as e:
        if isinstance(e, InputError):
            raise
        raise InputError(f"cannot read motion tokens file '{path}': {e}") from e
