"""Gaussian joint heatmaps (the Stage-1/2 supervision targets) and reading joints back from heatmaps.

Coordinates: (x, y) in pixels with integer values at pixel centres, in the image the keypoints were read
from (in_size) or in the heatmap grid. A point x in an image of width W0 lies at
(x + 0.5) * W / W0 - 0.5 in a heatmap of width W (the align_corners=False convention of resizing).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from kornia.geometry.subpix import spatial_soft_argmax2d


def _image_to_heatmap(xy: torch.Tensor, size: tuple[int, int], in_size: tuple[int, int]) -> torch.Tensor:
    scale = xy.new_tensor([size[1] / in_size[1], size[0] / in_size[0]])
    return (xy + 0.5) * scale - 0.5


def _heatmap_to_image(xy: torch.Tensor, size: tuple[int, int], in_size: tuple[int, int]) -> torch.Tensor:
    scale = xy.new_tensor([in_size[1] / size[1], in_size[0] / size[0]])
    return (xy + 0.5) * scale - 0.5


def render_heatmaps(
    xy: torch.Tensor,
    visible: torch.Tensor,
    size: tuple[int, int],
    sigma: float = 2.0,
    in_size: tuple[int, int] | None = None,
) -> torch.Tensor:
    """Renders one Gaussian heatmap per joint.

    xy: [B,J,2] (x, y) in pixels of an image of in_size; visible: [B,J] bool.
    size: (H, W) of the heatmaps; in_size: (H0, W0) of the image xy refers to (None: same as size).
    sigma: standard deviation of the Gaussian in heatmap pixels.

    Returns [B,J,H,W] float32 in [0,1]: exp(-d^2 / (2 sigma^2)) with d the distance from each pixel
    centre to the joint (1 exactly at the joint, not truncated); invisible joints give all-zero maps. The
    Gaussian is separable, so it is built as the outer product of a row and a column profile per joint.
    """
    if xy.ndim != 3 or xy.shape[-1] != 2 or visible.shape != xy.shape[:2]:
        raise ValueError(
            f"expected xy [B,J,2] and visible [B,J], got {tuple(xy.shape)}, {tuple(visible.shape)}"
        )
    if sigma <= 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    h, w = size
    pts = _image_to_heatmap(xy.to(torch.float32), size, in_size or size)
    xs = torch.arange(w, dtype=torch.float32, device=xy.device)
    ys = torch.arange(h, dtype=torch.float32, device=xy.device)
    gx = torch.exp(-((xs - pts[..., 0:1]) ** 2) / (2 * sigma**2))  # [B,J,W]
    gy = torch.exp(-((ys - pts[..., 1:2]) ** 2) / (2 * sigma**2))  # [B,J,H]
    gy = gy * visible.to(gy.dtype)[..., None]
    return torch.einsum("bjh,bjw->bjhw", gy, gx)


def heatmap_argmax(
    heatmaps: torch.Tensor,
    subpixel: Literal["quadratic", "soft", "none"] = "quadratic",
    in_size: tuple[int, int] | None = None,
    temperature: float = 0.05,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reads the joint positions back from heatmaps.

    heatmaps: [B,J,H,W] (any float dtype).
    subpixel: "none": the integer argmax pixel. "quadratic" (default): the argmax refined by fitting a
        parabola to the log-heatmap at the peak and its two neighbours along x and y (exact for Gaussian
        heatmaps as render_heatmaps draws; the offset is clamped to half a pixel, and left at 0 where a
        neighbour is off the map or the fit is not a maximum). "soft": kornia's spatial_soft_argmax2d, the
        expectation under softmax(heatmap / temperature) over the whole map; heatmaps in [0,1] need a small
        temperature (0.05 for sigma 2) or the flat background pulls the result to the map's centre.
    in_size: (H0, W0) of the image to return coordinates in (the inverse of render_heatmaps' mapping);
        None: heatmap pixels.

    Returns xy [B,J,2] float32 (x, y) pixels (integer = pixel centre) and confidence [B,J] float32, the
    heatmap's maximum value.
    """
    if heatmaps.ndim != 4:
        raise ValueError(f"expected heatmaps [B,J,H,W], got {tuple(heatmaps.shape)}")
    h, w = heatmaps.shape[-2:]
    hm = heatmaps.to(torch.float32)
    flat = rearrange(hm, "b j h w -> b j (h w)")
    confidence, idx = flat.max(dim=-1)
    iy, ix = idx // w, idx % w
    if subpixel == "soft":
        xy = spatial_soft_argmax2d(hm, temperature=temperature, normalized_coordinates=False)
    elif subpixel in ("quadratic", "none"):
        xy = torch.stack([ix, iy], dim=-1).to(torch.float32)
        if subpixel == "quadratic":
            xy = xy + _quadratic_offset(hm, ix, iy)
    else:
        raise ValueError(f"subpixel must be 'quadratic', 'soft' or 'none', got {subpixel!r}")
    if in_size is not None:
        xy = _heatmap_to_image(xy, (h, w), in_size)
    return xy, confidence


def _quadratic_offset(hm: torch.Tensor, ix: torch.Tensor, iy: torch.Tensor) -> torch.Tensor:
    """Sub-pixel offset [B,J,2] of the peak at (ix, iy) from a parabola through the log-heatmap."""
    w = hm.shape[-1]
    log = torch.log(hm.clamp_min(1e-12))
    padded = F.pad(log, (1, 1, 1, 1), value=float("nan"))  # off-map neighbours -> NaN -> no offset
    padded = rearrange(padded, "b j h w -> b j (h w)")
    pw = w + 2

    def at(dx: int, dy: int) -> torch.Tensor:
        return padded.gather(-1, ((iy + 1 + dy) * pw + (ix + 1 + dx))[..., None])[..., 0]

    centre = at(0, 0)
    offsets = []
    for lo, hi in ((at(-1, 0), at(1, 0)), (at(0, -1), at(0, 1))):
        curvature = lo - 2 * centre + hi
        off = 0.5 * (lo - hi) / curvature
        ok = torch.isfinite(off) & (curvature < 0)
        offsets.append(torch.where(ok, off.clamp(-0.5, 0.5), torch.zeros_like(off)))
    return torch.stack(offsets, dim=-1)


def heatmaps_to_image(heatmaps: torch.Tensor, colors: torch.Tensor | None = None) -> torch.Tensor:
    """Collapses joint heatmaps into one RGB picture per frame, for previews.

    heatmaps: [B,J,H,W] float; colors: [J,3] float RGB in [0,1] (None: fully saturated hues spread over
    the joints). Returns [B,H,W,3] float32 in [0,1] (ComfyUI IMAGE layout): per pixel, the colour of the
    strongest joint scaled by its heatmap value (clamped to [0,1]).
    """
    j = heatmaps.shape[1]
    if colors is None:
        colors = joint_colors(j)
    hm = heatmaps.to(torch.float32).clamp(0, 1)
    value, which = hm.max(dim=1)  # [B,H,W]
    return colors.to(device=hm.device, dtype=torch.float32)[which] * value[..., None]


def joint_colors(num_joints: int) -> torch.Tensor:
    """[num_joints,3] float32 RGB in [0,1]: hues spread evenly around the colour wheel (HSV, s = v = 1)."""
    hue = repeat(torch.arange(num_joints, dtype=torch.float32) / max(num_joints, 1), "j -> j c", c=3)
    k = (hue * 6 + torch.tensor([5.0, 3.0, 1.0])) % 6
    return 1 - torch.minimum(k, 4 - k).clamp(0, 1)
