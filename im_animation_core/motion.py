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


_FLOAT_DTYPES = {"F16", "BF16", "F32", "F64"}
_INT_DTYPES = {"I8", "I16", "I32", "I64", "U8", "U16", "U32"}


_TENSORS = ("tokens", "indices", "frame_indices")


def _header(shapes: dict, dtypes: dict, source: str) -> dict[str, tuple[list[int], str]]:
    """name -> (shape, dtype) of the three tensors, from the file's header only (nothing is read yet)."""
    from .errors import InputError

    missing = sorted(set(_TENSORS) - set(shapes))
    if missing:
        raise InputError(f"{source} lacks the tensor(s) {missing}: it was not written by Save Motion Tokens, "
                         "or it is damaged. Save the motion tokens again.")
    return {n: (list(shapes[n]), dtypes[n]) for n in _TENSORS}


def _check_header(head: dict, source: str) -> None:
    from .errors import InputError

    (tok_shape, tok_dtype), (idx_shape, idx_dtype), (fr_shape, fr_dtype) = (
        head["tokens"], head["indices"], head["frame_indices"])
    if len(tok_shape) != 3 or tok_dtype not in _FLOAT_DTYPES:
        raise InputError(f"{source}: 'tokens' is {tok_dtype} {tok_shape}, expected float [frames, tokens, "
                         "channels]. Save the motion tokens again.")
    frames = tok_shape[0]
    if frames == 0:
        raise InputError(f"{source} holds no frames (an empty tokens file): encode a driving video with at "
                         "least one frame and save it again.")
    if idx_shape != tok_shape[:2] or idx_dtype not in _INT_DTYPES:
        raise InputError(f"{source}: 'indices' is {idx_dtype} {idx_shape}, expected integers {tok_shape[:2]}. "
                         "The file is damaged: save the motion tokens again.")
    if fr_shape != [frames] or fr_dtype not in _INT_DTYPES:
        raise InputError(f"{source}: 'frame_indices' is {fr_dtype} {fr_shape}, expected {frames} integers. The "
                         "file is damaged: save the motion tokens again.")


def _check_values(motion: MotionTokens, source: str) -> None:
    import math

    from .errors import InputError

    if not math.isfinite(motion.fps) or motion.fps < 0:
        raise InputError(f"{source}: fps {motion.fps} is not a frame rate (0 or more). Save the tokens again.")
    if motion.source_frame_count < 1:
        raise InputError(f"{source}: source_frame_count {motion.source_frame_count} is below 1. Save the tokens "
                         "again.")
    frames = motion.frame_indices
    if bool((frames < 0).any()) or bool((frames >= motion.source_frame_count).any()):
        raise InputError(f"{source}: frame indices {int(frames.min())}..{int(frames.max())} fall outside the "
                         f"source clip of {motion.source_frame_count} frames. The file is damaged or edited: "
                         "save the motion tokens again.")
    if frames.numel() > 1 and not bool((frames[1:] > frames[:-1]).all()):
        raise InputError(f"{source}: frame indices are not increasing. Save the motion tokens again.")
    if not bool(torch.isfinite(motion.tokens).all()):
        raise InputError(f"{source}: tensor 'tokens' holds NaN or infinite values, which would animate to a "
                         "black video. The file is damaged: encode the driving video again.")


def load_motion_tokens(path: str) -> MotionTokens:
    """Read a file written by save_motion_tokens, checking shapes (from the header, before reading), frame
    indices and values. Raises InputError naming the file and what is wrong."""
    import os

    from .checkpoints import read_checked
    from .errors import InputError

    source = f"motion tokens file '{os.path.basename(path)}'"

    def check(meta: dict[str, str], shapes: dict, dtypes: dict) -> None:
        if meta.get("format") != MOTION_TOKENS_FORMAT:
            raise InputError(f"{source} is not a motion tokens file (written by Save Motion Tokens)")
        _check_header(_header(shapes, dtypes, source), source)

    meta, t = read_checked(path, "motion tokens", check, names=_TENSORS, error=InputError)
    try:
        motion = MotionTokens(tokens=t["tokens"].float(), indices=t["indices"].long(),
                              frame_indices=t["frame_indices"].long(), fps=float(meta["fps"]),
                              source_frame_count=int(meta["source_frame_count"]))
    except (KeyError, ValueError) as e:
        raise InputError(f"cannot read {source}: {e}. Is it a complete file written by Save Motion "
                         "Tokens?") from e
    _check_values(motion, source)
    return motion
