"""Side-by-side strips of clips for looking at results: panels next to each other, upscaled, labelled.

Pure image composition (torch + PIL for the label text); the demo writes the frames as gif / mp4 / png.
Panels are clips [T,H,W,3] or single images [H,W,3] (held still), float in [0,1] or uint8. Clips of
different lengths are padded to the longest by holding their last frame; panels of another size than the
first are resized to it (nearest). Layout, in output pixels (s = scale, L = label_height, g = gap):
panel k's frame occupies rows [L, L + H*s) and columns [k*(W*s + g), k*(W*s + g) + W*s); the label row
(rows [0, L)) and the gaps are the background colour, with each label centred above its panel.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

BACKGROUND = (24, 24, 24)
TEXT = (235, 235, 235)
LABEL_HEIGHT = 14


def to_uint8_frames(x: torch.Tensor) -> torch.Tensor:
    """[T,H,W,3] or [H,W,3] (float in [0,1] or uint8) -> uint8 [T,H,W,3] (an image becomes one frame)."""
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"expected [T,H,W,3] or [H,W,3], got {tuple(x.shape)}")
    if x.dtype == torch.uint8:
        return x
    return (x.float().clamp(0, 1) * 255).round().to(torch.uint8)


def _fit(panels: Sequence[torch.Tensor], length: int | None = None) -> list[torch.Tensor]:
    """uint8 [T,H,W,3] each, all of the first panel's size and of ``length`` frames (default: the longest)."""
    frames = [to_uint8_frames(p) for p in panels]
    if not frames:
        raise ValueError("need at least one panel")
    h, w = frames[0].shape[1:3]
    t = length or max(f.shape[0] for f in frames)
    out = []
    for f in frames:
        if f.shape[1:3] != (h, w):
            f = F.interpolate(f.permute(0, 3, 1, 2).float(), size=(h, w), mode="nearest-exact")
            f = f.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
        if f.shape[0] < t:
            f = torch.cat([f, f[-1:].expand(t - f.shape[0], -1, -1, -1)])
        out.append(f[:t])
    return out


def _upscale(x: torch.Tensor, scale: int) -> torch.Tensor:
    """[...,H,W,3] -> [...,H*scale,W*scale,3], nearest neighbour."""
    return x.repeat_interleave(scale, dim=-3).repeat_interleave(scale, dim=-2)


def label_row(width: int, height: int, texts: Sequence[tuple[int, int, str]], align: str = "center",
              background=BACKGROUND, color=TEXT) -> torch.Tensor:
    """A uint8 [height,width,3] bar with each text drawn (PIL's default font) in its span [x0, x1):
    centred, or from x0 + 2 with align="left"."""
    import numpy as np
    from PIL import Image, ImageDraw, ImageFont

    img = Image.new("RGB", (width, height), tuple(background))
    if height > 0 and texts:
        draw, font = ImageDraw.Draw(img), ImageFont.load_default()
        for x0, x1, text in texts:
            left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
            x = x0 + max((x1 - x0 - (right - left)) // 2, 0) if align == "center" else x0 + 2
            draw.text((x - left, (height - (bottom - top)) // 2 - top), text, fill=tuple(color), font=font)
    return torch.from_numpy(np.asarray(img).copy())


def side_by_side(panels: Sequence[torch.Tensor], labels: Sequence[str] | None = None, scale: int = 3,
                 gap: int = 4, label_height: int = LABEL_HEIGHT, background=BACKGROUND) -> torch.Tensor:
    """Panels (n clips [T_k,H,W,3] / images [H,W,3]) next to each other, frame by frame.

    Returns uint8 [T, L + H*scale, n*W*scale + (n-1)*gap, 3], T = the longest panel's length, L = label_height
    when labels are given (one per panel) else 0. See the module docstring for the exact layout."""
    if labels is not None and len(labels) != len(panels):
        raise ValueError(f"{len(labels)} labels for {len(panels)} panels")
    frames = [_upscale(f, scale) for f in _fit(panels)]
    t, ph, pw = frames[0].shape[:3]
    n = len(frames)
    lh = label_height if labels is not None else 0
    out = torch.empty(t, lh + ph, n * pw + (n - 1) * gap, 3, dtype=torch.uint8)
    out[:] = torch.tensor(background, dtype=torch.uint8)
    for k, f in enumerate(frames):
        x0 = k * (pw + gap)
        out[:, lh:, x0:x0 + pw] = f
    if lh:
        spans = [(k * (pw + gap), k * (pw + gap) + pw, str(text)) for k, text in enumerate(labels)]
        out[:, :lh] = label_row(out.shape[2], lh, spans, background=background)
    return out


def frame_indices(length: int, count: int) -> list[int]:
    """``count`` frame indices spread evenly over [0, length) including the first and the last (fewer when
    the clip is shorter)."""
    if length <= 0 or count <= 0:
        return []
    if count == 1 or length == 1:
        return [0]
    return sorted({round(i * (length - 1) / (count - 1)) for i in range(count)})


def contact_sheet(panels: Sequence[torch.Tensor], labels: Sequence[str] | None = None, columns: int = 5,
                  scale: int = 2, gap: int = 4, label_height: int = LABEL_HEIGHT,
                  background=BACKGROUND) -> tuple[torch.Tensor, list[int]]:
    """A static sheet: one row per panel, one column per frame in ``frame_indices(T, columns)`` (T = the
    longest panel's length; shorter panels hold their last frame).

    Returns (uint8 [L + R*(L + H*scale) + (R-1)*gap, C*W*scale + (C-1)*gap, 3], the frame indices), with
    R rows, C columns, L = label_height: a header row with "frame i" above each column, then per row a
    label row (the row's label, left-aligned; blank without labels) and its frames. Frame c of row r starts
    at y = L + r*(L + H*scale + gap) + L, x = c*(W*scale + gap)."""
    if labels is not None and len(labels) != len(panels):
        raise ValueError(f"{len(labels)} labels for {len(panels)} panels")
    frames = _fit(panels)
    idx = frame_indices(frames[0].shape[0], columns)
    cells = [_upscale(f[idx], scale) for f in frames]  # each [C, H*s, W*s, 3]
    c, ph, pw = cells[0].shape[:3]
    r, lh = len(cells), label_height
    width = c * pw + (c - 1) * gap
    out = torch.empty(lh + r * (lh + ph) + (r - 1) * gap, width, 3, dtype=torch.uint8)
    out[:] = torch.tensor(background, dtype=torch.uint8)
    if lh:
        out[:lh] = label_row(width, lh, [(j * (pw + gap), j * (pw + gap) + pw, f"frame {i}")
                                         for j, i in enumerate(idx)], background=background)
    for row, cell in enumerate(cells):
        y0 = lh + row * (lh + ph + gap)
        if lh and labels is not None:
            out[y0:y0 + lh] = label_row(width, lh, [(0, width, str(labels[row]))], align="left",
                                        background=background)
        for j in range(c):
            x0 = j * (pw + gap)
            out[y0 + lh:y0 + lh + ph, x0:x0 + pw] = cell[j]
    return out, idx
