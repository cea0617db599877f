"""Reading video files with decord: seek, stride, resize on decode, frame count and fps.

Used by training data loading, by the optional "Load Driving Video (path)" node and by the scripts that
score saved workflow outputs. decord is imported inside the functions, so importing this module never fails
where decord is not installed.

A file that cannot be read (missing, empty, truncated, corrupt, not a video) raises ``InputError`` naming
the file (``name`` when given, else the path) and what is wrong, never a decord stack trace.

Decoding is bounded: before any frame is decoded, a read whose output (frames x height x width) exceeds the
pixel budget (``max_decode_pixels``: the environment variable IMA_MAX_DECODE_PIXELS, else
DEFAULT_MAX_DECODE_PIXELS) is refused with the file, its size and the limit, since a few kilobytes of
compressed black frames can decode to gigabytes.
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
# Source pixels (frames x height x width) decoded at once when frames are resized with torch: bounds that
# staging buffer for large source frames (one frame at a time above 4096x4096).
_RESIZE_CHUNK_PIXELS = 1 << 24

# Output pixels (frames x height x width) one read may decode by default: about 1.2 GB of float32 RGB frames;
# 121 frames of 1280x720 fit, 8 frames of 4096x4096 do not.
DEFAULT_MAX_DECODE_PIXELS = 120_000_000
MAX_DECODE_PIXELS_ENV = "IMA_MAX_DECODE_PIXELS"


def max_decode_pixels() -> int:
    """The pixel budget of one read: IMA_MAX_DECODE_PIXELS (a whole number > 0) when set, else the default.
    A value that is not such a number raises InputError naming the variable."""
    raw = os.environ.get(MAX_DECODE_PIXELS_ENV, "").strip().replace("_", "")
    if not raw:
        return DEFAULT_MAX_DECODE_PIXELS
    if not raw.isdigit() or int(raw) < 1:
        raise InputError(f"The environment variable {MAX_DECODE_PIXELS_ENV} = {raw[:40]!r} is not a whole number of "
                         "pixels > 0: fix or unset it in the server's environment.")
    return int(raw)


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


def _check_path(path: str | os.PathLike, name: str | None = None) -> str:
    path = os.fspath(path)
    shown = name or path
    if not os.path.exists(path):
        raise InputError(f"Video file '{shown}' does not exist: check the path.")
    if os.path.isdir(path):
        raise InputError(f"Video path '{shown}' is a folder, not a video file: give the path of a video file.")
    if os.path.getsize(path) == 0:
        raise InputError(f"Video file '{shown}' is empty (0 bytes): re-export or re-download the video.")
    return path


def _open(decord, path: str, width: int = -1, height: int = -1, name: str | None = None):
    """Opens a decord VideoReader; any failure becomes an InputError naming the file."""
    shown = name or path
    try:
        reader = decord.VideoReader(path, ctx=decord.cpu(0), width=width, height=height)
    except (RuntimeError, decord.DECORDError) as exc:
        if "video stream" in str(exc):
            raise InputError(
                f"'{shown}' has no video stream (an audio-only or other non-video file): choose a video file."
            ) from None
        raise InputError(
            f"Could not open '{shown}' as a video: the file is not a video, or it is truncated or corrupt"
            f"{_reason(exc)}. Re-export or re-download the video."
        ) from None
    if len(reader) <= 0:
        raise InputError(f"Video file '{shown}' contains no frames: re-export or re-download the video.")
    return reader


def _header_size(path: str) -> tuple[int, int] | None:
    """(height, width) of the first video stream from the container's header, without decoding a frame; None
    when PyAV is not installed or the header does not tell."""
    try:
        import av
    except ImportError:  # pragma: no cover - PyAV comes with ComfyUI; without it the first frame is decoded
        return None
    try:
        with av.open(path, metadata_errors="ignore") as container:
            stream = container.streams.video[0]
            height, width = int(stream.codec_context.height), int(stream.codec_context.width)
    except Exception:  # noqa: BLE001 - any failure here means "unknown"; decord then reports what is wrong
        return None
    return (height, width) if height > 0 and width > 0 else None


def _source_size(decord, reader, path: str, name: str | None) -> tuple[int, int]:
    """(height, width) of the source frames: from the header when it tells, else by decoding frame 0."""
    size = _header_size(path)
    if size is not None:
        return size
    try:
        first = _as_tensor(reader[0])
    except (RuntimeError, decord.DECORDError) as exc:
        raise InputError(
            f"Could not decode the first frame of '{name or path}': the file is truncated or corrupt"
            f"{_reason(exc)}. Re-export or re-download the video."
        ) from None
    return int(first.shape[0]), int(first.shape[1])


def _check_budget(name: str, frames: int, size: tuple[int, int], source: tuple[int, int], budget: int,
                  resized: bool) -> None:
    """Refuses, before decoding, a read of ``frames`` frames of ``size`` (height, width) over ``budget``
    pixels, and source frames that alone exceed it (each is decoded whole before any resize)."""
    (h, w), (sh, sw) = size, source
    if sh * sw > budget:
        raise InputError(
            f"'{name}' has frames of {sw}x{sh} pixels, more than the decoding limit of {budget:,} pixels: "
            f"re-export the video at a smaller size, or raise the limit with the environment variable "
            f"{MAX_DECODE_PIXELS_ENV} (docs/security.md)."
        )
    total = frames * h * w
    if total > budget:
        advice = "set a smaller width and height" if resized else "set width and height to resize on decode"
        raise InputError(
            f"'{name}' would decode to {frames} frames of {w}x{h} pixels ({total:,} pixels, "
            f"{total * 12 / 2**30:.1f} GiB as float32 frames), over the decoding limit of {budget:,} pixels: "
            f"{advice}, read fewer frames (max_frames, stride), or raise the limit with the environment "
            f"variable {MAX_DECODE_PIXELS_ENV} (docs/security.md)."
        )


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


def _decode_into(reader, indices: list[int], out: torch.Tensor, resize_to: tuple[int, int] | None,
                 chunk_frames: int = _DECODE_CHUNK) -> None:
    """Decodes `indices` chunk by chunk into `out` [T,H,W,3] float32, resizing with torch if asked."""
    for lo in range(0, len(indices), chunk_frames):
        chunk = indices[lo : lo + chunk_frames]
        frames = _as_tensor(reader.get_batch(chunk))
        if resize_to is not None:
            x = rearrange(frames, "t h w c -> t c h w").float()
            x = F.interpolate(x, size=resize_to, mode="bilinear", align_corners=False, antialias=True)
            frames = rearrange(x.round().clamp(0, 255), "t c h w -> t h w c")
        if tuple(frames.shape) != (len(chunk), *out.shape[1:]):
            raise _UnexpectedShape(tuple(frames.shape))
        out[lo : lo + len(chunk)] = frames.to(torch.float32) / 255.0


def _decode_with_av(path: str, indices: list[int], out: torch.Tensor, resize_to: tuple[int, int] | None) -> None:
    """Decodes `indices` into `out` with PyAV, frame by frame in file order: for frames decord cannot copy
    out (it fails on frames a few pixels wide, e.g. 2x2)."""
    import av

    wanted = {index: slot for slot, index in enumerate(indices)}
    last = indices[-1]
    with av.open(path, metadata_errors="ignore") as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i in wanted:
                x = torch.from_numpy(frame.to_ndarray(format="rgb24"))
                if resize_to is not None:
                    x = rearrange(x, "h w c -> 1 c h w").float()
                    x = F.interpolate(x, size=resize_to, mode="bilinear", align_corners=False, antialias=True)
                    x = rearrange(x.round().clamp(0, 255), "1 c h w -> h w c")
                if tuple(x.shape) != tuple(out.shape[1:]):
                    raise _UnexpectedShape(tuple(x.shape))
                out[wanted[i]] = x.to(torch.float32) / 255.0
            if i >= last:
                return
    raise _UnexpectedShape(("frames missing",))


def read_video(
    path: str | os.PathLike,
    stride: int = 1,
    max_frames: int | None = None,
    start: int = 0,
    size: tuple[int, int] | None = None,
    name: str | None = None,
    max_pixels: int | None = None,
) -> VideoClip:
    """Reads frames start, start + stride, ... (at most max_frames of them) from a video file.

    path: a video file decord (FFmpeg) can read.
    stride: keep every stride-th frame (>= 1); the returned fps is the source fps / stride.
    max_frames: at most this many frames are returned (None: all).
    start: index of the first source frame to return (>= 0, < the frame count).
    size: (height, width) in pixels to resize every frame to on decode (aspect ratio not kept); None keeps
        the source size.
    name: how messages name the file (e.g. relative to the folder a user picked it from); default the path.
    max_pixels: the budget of returned pixels (frames x height x width); None: max_decode_pixels(). A read
        over it is refused before any frame is decoded.

    Only the needed frames are decoded (decord's get_batch on those indices, which seeks), in chunks, so
    peak memory is the returned float32 frames plus one small uint8 chunk. Returns a VideoClip with frames
    [T,H,W,3] float32 RGB in [0,1]. Raises InputError for a missing, empty, truncated, corrupt or
    non-video file and for out-of-range arguments.
    """
    size = _validate_args(stride, max_frames, start, size)
    path = _check_path(path, name)
    shown = name or path
    budget = max_decode_pixels() if max_pixels is None else max_pixels
    decord = _import_decord()

    # The unresized reader gives frame count, fps and source size; the frame count does not depend on size.
    reader = _open(decord, path, name=name)
    frame_count, source_fps = len(reader), _fps(reader)
    if start >= frame_count:
        raise InputError(
            f"Start frame {start} is past the end of '{shown}', which has {frame_count} frames: "
            f"choose a start frame below {frame_count}."
        )
    indices = _frame_indices(frame_count, start, stride, max_frames)
    source = _source_size(decord, reader, path, name)
    _check_budget(shown, len(indices), size or source, source, budget, size is not None)

    def decode_failed(exc: BaseException) -> InputError:
        return InputError(
            f"Could not decode frames of '{shown}' (reported {frame_count} frames): the file is truncated or "
            f"corrupt{_reason(exc)}. Re-export or re-download the video."
        )

    def fallbacks(resize_to: tuple[int, int] | None) -> None:
        # decord mis-sizes some resize targets (e.g. exactly half the source width gives 4 channels or a
        # size-mismatch error) and cannot copy out frames a few pixels wide: decode at the source size, a few
        # frames at a time, resizing with torch; then with PyAV.
        try:
            chunk = max(1, min(_DECODE_CHUNK, _RESIZE_CHUNK_PIXELS // (source[0] * source[1])))
            _decode_into(reader, indices, out, resize_to=resize_to, chunk_frames=chunk)
        except (RuntimeError, decord.DECORDError, _UnexpectedShape):
            try:
                _decode_with_av(path, indices, out, resize_to)
            except Exception as exc:  # noqa: BLE001 - PyAV's errors are of many kinds; all mean "unreadable"
                raise decode_failed(exc) from None

    out = torch.empty((len(indices), *(size or source), 3), dtype=torch.float32)
    if size is not None:
        # Resize on decode: decord scales each frame as it decodes it, so only the output size is held.
        try:
            resized = _open(decord, path, width=size[1], height=size[0], name=name)
            _decode_into(resized, indices, out, resize_to=None)
        except (InputError, RuntimeError, decord.DECORDError, _UnexpectedShape):
            fallbacks(size)
    else:
        try:
            _decode_into(reader, indices, out, resize_to=None)
        except (RuntimeError, decord.DECORDError, _UnexpectedShape):
            fallbacks(None)

    return VideoClip(
        frames=out,
        fps=source_fps / stride,
        frame_indices=torch.tensor(indices, dtype=torch.int64),
        source_frame_count=frame_count,
        source_fps=source_fps,
    )
