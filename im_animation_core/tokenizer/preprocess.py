"""Driving-frame preprocessing for the motion tokenizer (the released pad-to-square + bilinear resize)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange

from ..errors import InputError

# Upper bound on the zero-padded square frames held at once while resizing (bytes, float32).
PAD_BUDGET_BYTES = 64 * 1024 * 1024


def check_frames(frames: torch.Tensor, name: str = "frames") -> None:
    """Raise InputError unless frames is a non-empty float [N,H,W,3] tensor with finite values."""
    if not isinstance(frames, torch.Tensor):
        raise InputError(f"{name} must be an IMAGE tensor [N,H,W,3], got {type(frames).__name__}.")
    if frames.ndim != 4:
        raise InputError(f"{name} must be an IMAGE batch [N,H,W,3], got shape {list(frames.shape)}; "
                         f"add a batch dimension for a single frame.")
    if frames.shape[0] == 0:
        raise InputError(f"{name} is an empty batch (0 frames): the video decoded to no frames, or max "
                         f"frames / stride removed them all.")
    channels = frames.shape[-1]
    if channels == 4:
        raise InputError(f"{name} have 4 channels (RGBA); the motion tokenizer needs RGB: drop the alpha "
                         f"channel (e.g. frames[..., :3]) or convert the images to RGB.")
    if channels != 3:
        raise InputError(f"{name} must have 3 channels (RGB) in the last dimension, got shape "
                         f"{list(frames.shape)}; convert them to RGB [N,H,W,3].")
    if min(frames.shape[1:3]) == 0:
        raise InputError(f"{name} have zero height or width: {list(frames.shape)}.")
    if not frames.is_floating_point():
        raise InputError(f"{name} must be float RGB in [0,1], got {frames.dtype}; divide 8-bit images by "
                         f"255.")


def _check_values(frames: torch.Tensor, name: str) -> None:
    low, high = (float(v) for v in torch.aminmax(frames))  # one pass; NaN propagates into both
    if not (math.isfinite(low) and math.isfinite(high)):
        raise InputError(f"{name} contain NaN or infinite values; fix the node that produced them.")
    if high > 2.0 or low < -1.0:
        raise InputError(f"{name} have values outside [0,1] (range {low:g}..{high:g}); IMAGE frames must be "
                         f"RGB in [0,1] (divide 0-255 data by 255).")


def pad_amounts(height: int, width: int) -> tuple[int, int, int, int]:
    """(left, right, top, bottom) zero padding that makes an HxW frame square, centred (odd extra pixel on
    the right / bottom)."""
    side = max(height, width)
    left = (side - width) // 2
    top = (side - height) // 2
    return left, side - width - left, top, side - height - top


def preprocess_frames(frames: torch.Tensor, size: int = 256) -> torch.Tensor:
    """ComfyUI IMAGE frames -> motion tokenizer input.

    frames: [N,H,W,3] float RGB in [0,1] (any device). Returns [N,3,size,size] float32 on the same device:
    the shorter side is zero-padded symmetrically to a square (the released code pads portrait frames'
    width this way), then resized bilinearly with align_corners=False and no antialiasing. Frames are
    processed in sub-batches so that at most ``PAD_BUDGET_BYTES`` of padded frames exist at once.
    Raises InputError for an empty batch, a non-RGB or non-4-D tensor, integer data, NaN / inf, or values far
    outside [0,1] (0-255 data).
    """
    check_frames(frames)
    n, height, width, _ = frames.shape
    left, right, top, bottom = pad_amounts(height, width)
    side = max(height, width)
    out = torch.empty(n, 3, size, size, dtype=torch.float32, device=frames.device)
    per_frame = 3 * side * side * 4
    step = max(1, PAD_BUDGET_BYTES // per_frame)
    for start in range(0, n, step):
        chunk = frames[start:start + step]
        _check_values(chunk, "frames")
        x = rearrange(chunk.to(torch.float32), "n h w c -> n c h w")
        if left or right or top or bottom:
            x = F.pad(x, (left, right, top, bottom), mode="constant", value=0.0)
        if side != size:
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=False)
        out[start:start + step] = x
    return out
