"""Stage-2 augmentations (paper, supplementary: "random color transformations, then randomly crop or scale
the original video", plus padding), applied to the identity / target side of a pair.

``augment_pair`` draws one colour jitter and one geometric transform per sample and applies both, in that
order, to the identity image and every target frame alike; the target joints, identity joints and target
face boxes move with the geometry (x' = s * x + t, pixel-centre coordinates), joints that leave the frame
become invisible. The driving side keeps its geometry (the motion comes from there), so the model has to
put the driver's motion into the identity's own layout; with ``jitter_driving`` it gets an independent
colour jitter. Geometric modes (one drawn per sample):

- "crop": zoom in by s in [1, max_scale] on a random window inside the frame (random crop, resized back);
- "pad": zoom out by s in [min_scale, 1], the shrunk frame placed at a random spot, the rest padded;
- "scale": zoom by s in [min_scale, max_scale] about the centre, shifted by up to max_shift of the size.

Warping uses kornia's ``warp_affine`` (bilinear, padding with zeros or the border), after a Gaussian
anti-alias blur when shrinking; colour uses ``kornia.enhance`` (brightness, contrast, saturation, hue) with
factors drawn from the given torch.Generator, so results are reproducible.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import kornia
import torch
from einops import rearrange
from torch.utils.data import Dataset

from ..synthetic.render import torch_threads
from .pairs import item_generator

GEOMETRY_MODES = ("crop", "pad", "scale")


@dataclass
class AugmentConfig:
    """Ranges of the Stage-2 augmentations (each factor is drawn uniformly)."""

    modes: tuple[str, ...] = GEOMETRY_MODES
    min_scale: float = 0.7
    max_scale: float = 1.4
    max_shift: float = 0.15  # "scale" mode: shift as a fraction of the width / height
    geometry_prob: float = 1.0
    color_prob: float = 1.0
    brightness: float = 0.15  # added, +-
    contrast: float = 0.25  # factor 1 +-
    saturation: float = 0.3  # factor 1 +-
    hue: float = 0.05  # fraction of a full hue turn, +-
    jitter_driving: bool = False
    padding_mode: str = "zeros"  # or "border"
    threads: int | None = 1  # torch threads while augmenting (restored after; None: unchanged), as the renderer

    def __post_init__(self) -> None:
        bad = [m for m in self.modes if m not in GEOMETRY_MODES]
        if bad or not self.modes:
            raise ValueError(f"modes must be a non-empty subset of {GEOMETRY_MODES}, got {self.modes}")
        if not 0 < self.min_scale <= 1 <= self.max_scale:
            raise ValueError(f"need 0 < min_scale <= 1 <= max_scale, got {self.min_scale}, {self.max_scale}")
        if self.padding_mode not in ("zeros", "border"):
            raise ValueError(f"padding_mode must be 'zeros' or 'border', got {self.padding_mode!r}")


def _u(g: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=g, dtype=torch.float64))


def random_affine(g: torch.Generator, height: int, width: int, config: AugmentConfig) -> tuple[str, torch.Tensor]:
    """(mode, affine [2,3]) mapping pixel-centre coordinates of the original frame to the augmented frame."""
    mode = config.modes[int(torch.randint(len(config.modes), (), generator=g))]
    size = (width, height)
    edge = [0.0, 0.0]  # offset of the frame's edge: x' + 0.5 = s * (x + 0.5) + edge
    if mode == "crop":
        s = _u(g, 1.0, config.max_scale)
        for i, n in enumerate(size):
            edge[i] = -s * _u(g, 0.0, n - n / s)
    elif mode == "pad":
        s = _u(g, config.min_scale, 1.0)
        for i, n in enumerate(size):
            edge[i] = _u(g, 0.0, n - s * n)
    else:
        s = _u(g, config.min_scale, config.max_scale)
        for i, n in enumerate(size):
            edge[i] = n / 2 * (1 - s) + _u(g, -config.max_shift, config.max_shift) * n
    tx, ty = (0.5 * s - 0.5 + e for e in edge)
    return mode, torch.tensor([[s, 0.0, tx], [0.0, s, ty]], dtype=torch.float32)


def warp_frames(frames: torch.Tensor, affine: torch.Tensor, padding_mode: str = "zeros") -> torch.Tensor:
    """frames [N,H,W,C] float -> the same frames warped by affine [2,3] (pixel-centre coordinates, original ->
    new), same size; bilinear, with a Gaussian anti-alias blur first when shrinking."""
    n, h, w, _ = frames.shape
    x = rearrange(frames, "n h w c -> n c h w")
    s = float(affine[0, 0])
    if s < 1.0:
        sigma = 0.5 * (1.0 / s - 1.0)
        if sigma > 0.2:
            ks = 2 * math.ceil(2.5 * sigma) + 1
            x = kornia.filters.gaussian_blur2d(x, (ks, ks), (sigma, sigma), border_type="replicate")
    m = affine.to(x.dtype)[None].expand(n, 2, 3)
    y = kornia.geometry.transform.warp_affine(x, m, (h, w), mode="bilinear", padding_mode=padding_mode,
                                              align_corners=True)
    return rearrange(y, "n c h w -> n h w c").contiguous()


def transform_points(xy: torch.Tensor, affine: torch.Tensor) -> torch.Tensor:
    """Points [...,2] (x, y) -> affine applied."""
    return xy @ affine[:, :2].T.to(xy.dtype) + affine[:, 2].to(xy.dtype)


def _inside(xy: torch.Tensor, height: int, width: int) -> torch.Tensor:
    return (xy[..., 0] >= -0.5) & (xy[..., 0] < width - 0.5) & (xy[..., 1] >= -0.5) & (xy[..., 1] < height - 0.5)


def color_jitter_params(g: torch.Generator, config: AugmentConfig) -> dict[str, float]:
    return {
        "brightness": _u(g, -config.brightness, config.brightness),
        "contrast": _u(g, 1 - config.contrast, 1 + config.contrast),
        "saturation": _u(g, 1 - config.saturation, 1 + config.saturation),
        "hue": _u(g, -config.hue, config.hue),
    }


def color_jitter(frames: torch.Tensor, params: dict[str, float]) -> torch.Tensor:
    """frames [N,H,W,3] in [0,1] -> brightness (added), contrast, saturation, hue (fraction of a turn)."""
    x = rearrange(frames, "n h w c -> n c h w")
    x = kornia.enhance.adjust_brightness(x, params["brightness"])
    x = kornia.enhance.adjust_contrast(x, params["contrast"])
    x = kornia.enhance.adjust_saturation(x, params["saturation"]).clamp(0, 1)
    x = kornia.enhance.adjust_hue(x, params["hue"] * 2 * math.pi).clamp(0, 1)
    return rearrange(x, "n c h w -> n h w c").contiguous()


def augment_pair(sample: dict, generator: torch.Generator, config: AugmentConfig | None = None, *,
                 return_params: bool = False):
    """Stage-2 augmentation of one (unbatched) pair sample (the dict of SyntheticPairs / VideoFolder).

    Returns a new dict with the same keys (the input is not modified); with return_params also a dict with
    "mode", "affine" [2,3] (None when no geometric transform was drawn) and "color" (jitter factors or None).
    """
    cfg = config or AugmentConfig()
    with torch_threads(cfg.threads):
        return _augment_pair(sample, generator, cfg, return_params)


def _augment_pair(sample: dict, g: torch.Generator, cfg: AugmentConfig, return_params: bool):
    out = dict(sample)
    h, w = sample["identity"].shape[:2]
    do_color = _u(g, 0, 1) < cfg.color_prob
    color = color_jitter_params(g, cfg)
    driving_color = color_jitter_params(g, cfg)
    do_geometry = _u(g, 0, 1) < cfg.geometry_prob
    mode, affine = random_affine(g, h, w, cfg)

    frames = torch.cat([sample["identity"][None], sample["target"]])
    if do_color:
        frames = color_jitter(frames, color)
        if cfg.jitter_driving:
            out["driving"] = color_jitter(sample["driving"], driving_color)
    if do_geometry:
        frames = warp_frames(frames, affine, cfg.padding_mode)
        for key in ("identity", "target"):
            xy = transform_points(sample[f"{key}_joints"], affine)
            out[f"{key}_joints"] = xy
            out[f"{key}_visible"] = sample[f"{key}_visible"] & _inside(xy, h, w)
        boxes = sample["target_face_boxes"]
        corners = transform_points(boxes.reshape(*boxes.shape[:-1], 2, 2), affine).reshape(boxes.shape)
        limit = torch.tensor([w, h, w, h], dtype=corners.dtype)
        out["target_face_boxes"] = torch.minimum(corners.clamp(min=0), limit)
    out["identity"], out["target"] = frames[0], frames[1:]
    if return_params:
        return out, {"mode": mode if do_geometry else None, "affine": affine if do_geometry else None,
                     "color": color if do_color else None}
    return out


class AugmentedPairs(Dataset):
    """Wraps a pair dataset and applies augment_pair to every item; item i's augmentation is a function of
    (seed, epoch, i): call set_epoch(e) at the start of each epoch for fresh draws."""

    def __init__(self, dataset: Dataset, seed: int = 0, config: AugmentConfig | None = None):
        self.dataset, self.seed, self.config, self.epoch = dataset, int(seed), config or AugmentConfig(), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        g = item_generator("augment", self.seed, self.epoch, index)
        return augment_pair(self.dataset[index], g, self.config)
