"""Reading video files with decord: seek, stride, resize on decode, frame count and fps.

Used by training data loading, by the optional "Load Driving Video (path)" node and by the scripts that
score saved workflow outputs. decord is imported inside the functions, so importing this module never fails
where decord is not installed.

A file that cannot be read (missing, empty, truncated, corrupt, not a video) raises ``InputError`` naming
the path and what is wrong, never a decord stack trace.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange

from .errors import InputError

# Frames decoded per decord call: bounds the uint8 staging buffer next to the float32 output.
_DECODE_CHUNK = 32


@dataclass
class VideoClip:
    """Frames read from a video file.

    frames: [T,H,W,3] float32 RGB in [0,1] on the CPU (ComfyUI IMAGE layout).
    fps: frames per second of the returned frames (source fps / stride); 0.0 when the file has no usable
        frame rate.
    frame_indices: [T] int64, index in the source video of each returned frame.
    source_frame_count: number of frames in the source video.
    source_fps: frame rate of the source video (0.0 when unknown).
    """

    frames: torch.Tensor
    fps: float
    frame_indices: torch.Tensor
    source_frame_count: int
    source_fps: float

    def __len__(self) -> int:
        return int(self.frames.shape[0])


class _UnexpectedShape(Exception):
    """decord returned frames of another shape than asked for (a decord resize bug on some sizes)."""


def _import_decord():
    try:
        import decord
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "Reading video files needs the 'decord' package: install it with 'pip install decord' "
            "(or load the video with ComfyUI's LoadVideo node instead)."
        ) from exc
    decord.logging.set_level(decord.logging.QUIET)
    return decord


def _check_path(path: str | os.PathLike) -> str:
    path = os.fspath(path)
    if not os.path.exists(path):
        raise InputError(f"Video file '{path}' does not exist: check the path.")
    if os.path.isdir(path):
        raise InputError(f"Video path '{path}' is a folder, not a video file: give the path of a video file.")
    if os.path.getsize(path) == 0:
        raise InputError(f"Video file '{path}' is empty (0 bytes): re-export or re-download the video.")
    return path


def _open(decord, path: str, width: int = -1, height: int = -1):
    """Opens a decord VideoReader; any failure becomes an InputError naming the path."""
    try:
        reader = decord.VideoReader(path, ctx=decord.cpu(0), width=width, height=height)
    except (RuntimeError, decord.DECORDError) as exc:
        if "video stream" in str(exc):
            raise InputError(
                f"'{path}' has no video stream (an audio-only or other non-video file): choose a video file."
            ) from None
        raise InputError(
            f"Could not open '{path}' as a video: the file is not a video, or it is truncated or corrupt"
            f"{_reason(exc)}. Re-export or re-download the video."
        ) from None
    if len(reader) <= 0:
        raise InputError(f"Video file '{path}' contains no frames: re-export or re-download the video.")
    return reader


def _first_line(exc: BaseException) -> str:
    """The decoder's reason for a failure, without decord's timestamps and source locations."""
    text = str(exc).strip()
    line = text.splitlines()[0] if text else ""
    line = re.sub(r"\[\d\d:\d\d:\d\d\]\s*", "", line)
    line = re.sub(r"\S+\.(?:cc|h|cpp):\d+:\s*", "", line).strip()
    return line[:200]


def _reason(exc: BaseException) -> str:
    line = _first_line(exc)
    return f" (decoder said: {line})" if line and not line.startswith("Error reading") else ""


def _as_tensor(batch) -> torch.Tensor:
    """A decord NDArray (or, under another decord bridge, a torch tensor / numpy array) -> uint8 tensor."""
    if isinstance(batch, torch.Tensor):
        return batch
    if hasattr(batch, "asnumpy"):
        batch = batch.asnumpy()
    return torch.from_numpy(np.ascontiguousarray(batch))


def _fps(reader) -> float:
    try:
        fps = float(reader.get_avg_fps())
    except Exception:  # noqa: BLE001 - broken metadata means "unknown", not an error
        return 0.0
    return fps if math.isfinite(fps) and fps > 0 else 0.0


def probe_video(path: str | os.PathLike) -> tuple[int, float, int, int]:
    """Reads a video's frame count, frame rate and frame size without decoding the whole file.

    Returns (frame_count, fps, height, width); fps is 0.0 when the file has no usable frame rate, height
    and width are in pixels. Decodes the first frame only. Raises InputError for a missing, empty,
    truncated, corrupt or non-video file.
    """
    path = _check_path(path)
    decord = _import_decord()
    reader = _open(decord, path)
    try:
        first = _as_tensor(reader.next())
    except (RuntimeError, decord.DECORDError) as exc:
        raise InputError(
            f"Could not decode the first frame of '{path}': the file is truncated or corrupt"
            f"{_reason(exc)}. Re-export or re-download the video."
        ) from None
    return len(reader), _fps(reader), int(first.shape[0]), int(first.shape[1])


def _frame_indices(frame_count: int, start: int, stride: int, max_frames: int | None) -> list[int]:
    indices = list(range(start, frame_count, stride))
    if max_frames is not None:
        indices = indices[:max_frames]
    return indices


def _validate_args(stride, max_frames, start, size) -> tuple[int, int] | None:
    if isinstance(stride, bool) or not isinstance(stride, int) or stride < 1:
        raise InputError(f"Frame stride must be a whole number >= 1, got {stride!r}.")
    if isinstance(start, bool) or not isinstance(start, int) or start < 0:
        raise InputError(f"Start frame must be a whole number >= 0, got {start!r}.")
    if max_frames is not None and (
        isinstance(max_frames, bool) or not isinstance(max_frames, int) or max_frames < 1
    ):
        raise InputError(f"Max frames must be a whole number >= 1 (or None for all), got {max_frames!r}.")
    if size is None:
        return None
    if (
        not isinstance(size, Sequence)
        or len(size) != 2
        or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in size)
    ):
        raise InputError(f"Video size must be (height, width) in whole pixels > 0, got {size!r}.")
    return int(size[0]), int(size[1])


def _decode_into(reader, indices: list[int], out: torch.Tensor, resize_to: tuple[int, int] | None) -> None:
    """Decodes `indices` chunk by chunk into `out` [T,H,W,3] float32, resizing with torch if asked."""
    for lo in range(0, len(indices), _DECODE_CHUNK):
        chunk = indices[lo : lo + _DECODE_CHUNK]
        frames = _as_tensor(reader.get_batch(chunk))
        if resize_to is not None:
            x = rearrange(frames, "t h w c -> t c h w").float()
            x = F.interpolate(x, size=resize_to, mode="bilinear", align_corners=False, antialias=True)
            frames = rearrange(x.round().clamp(0, 255), "t c h w -> t h w c")
        if tuple(frames.shape) != (len(chunk), *out.shape[1:]):
            raise _UnexpectedShape(tuple(frames.shape))
        out[lo : lo + len(chunk)] = frames.to(torch.float32) / 255.0


def read_video(
    path: str | os.PathLike,
    stride: int = 1,
    max_frames: int | None = None,
    start: int = 0,
    size: tuple[int, int] | None = None,
) -> VideoClip:
    """Reads frames start, start + stride, ... (at most max_frames of them) from a video file.

    path: a video file decord (FFmpeg) can read.
    stride: keep every stride-th frame (>= 1); the returned fps is the source fps / stride.
    max_frames: at most this many frames are returned (None: all).
    start: index of the first source frame to return (>= 0, < the frame count).
    size: (height, width) in pixels to resize every frame to on decode (aspect ratio not kept); None keeps
        the source size.

    Only the needed frames are decoded (decord's get_batch on those indices, which seeks), in chunks, so
    peak memory is the returned float32 frames plus one small uint8 chunk. Returns a VideoClip with frames
    [T,H,W,3] float32 RGB in [0,1]. Raises InputError for a missing, empty, truncated, corrupt or
    non-video file and for out-of-range arguments.
    """
    size = _validate_args(stride, max_frames, start, size)
    path = _check_path(path)
    decord = _import_decord()

    # The unresized reader gives frame count, fps and source size; the frame count does not depend on size.
    reader = _open(decord, path)
    frame_count, source_fps = len(reader), _fps(reader)
    if start >= frame_count:
        raise InputError(
            f"Start frame {start} is past the end of '{path}', which has {frame_count} frames: "
            f"choose a start frame below {frame_count}."
        )
    indices = _frame_indices(frame_count, start, stride, max_frames)

    def decode_failed(exc: BaseException) -> InputError:
        return InputError(
            f"Could not decode frames of '{path}' (reported {frame_count} frames): the file is truncated or "
            f"corrupt{_reason(exc)}. Re-export or re-download the video."
        )

    out = None
    if size is not None:
        # Resize on decode. decord mis-sizes some targets (e.g. exactly half the source width gives 4
        # channels or a size-mismatch error); then decode at the source size and resize with torch.
        out = torch.empty((len(indices), size[0], size[1], 3), dtype=torch.float32)
        try:
            resized = _open(decord, path, width=size[1], height=size[0])
            _decode_into(resized, indices, out, resize_to=None)
        except (InputError, RuntimeError, decord.DECORDError, _UnexpectedShape):
            try:
                _decode_into(reader, indices, out, resize_to=size)
            except (RuntimeError, decord.DECORDError, _UnexpectedShape) as exc:
                raise decode_failed(exc) from None
    else:
        try:
            first = _as_tensor(reader[indices[0]])
            out = torch.empty((len(indices), first.shape[0], first.shape[1], 3), dtype=torch.float32)
            _decode_into(reader, indices, out, resize_to=None)
        except (RuntimeError, decord.DECORDError, _UnexpectedShape) as exc:
            raise decode_failed(exc) from None

    return VideoClip(
        frames=out,
        fps=source_fps / stride,
        frame_indices=torch.tensor(indices, dtype=torch.int64),
        source_frame_count=frame_count,
        source_fps=source_fps,
    )
