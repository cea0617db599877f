"""Rasterise articulated 2D characters with torch, vectorised over frames, parts and pixels.

Every part is an anti-aliased primitive (capsule = segment with a radius, circle, ellipse, convex quad) whose
coverage of a pixel is clamp(0.5 - signed distance, 0, 1). Parts are alpha-composited in painter's order:
background, legs, torso (with its pattern), upper arms (sleeves), forearms, then the head window (neck,
ears, head, hair, eyes, nose, mouth) and the two hand windows. Pixel centres are at integer coordinates, as
the joints'.

Speed: a primitive is only evaluated in a small square window that follows it from frame to frame (one
window per limb, one for the head and its face, one per hand, one for the torso); windows are pasted into
the frames through flat pixel indices (scatter), pixels of a window outside the frame go to a discarded
slot. Frames are rendered in chunks so that temporaries stay small.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from ..keypoints import HAND_BONES, LEFT_HAND_START, RIGHT_HAND_START, face_boxes_from_joints
from .character import (
    L_ANKLE,
    L_EAR,
    L_ELBOW,
    L_EYE,
    L_HIP,
    L_KNEE,
    L_SHOULDER,
    L_TOE,
    L_WRIST,
    NECK,
    NOSE,
    R_ANKLE,
    R_EAR,
    R_ELBOW,
    R_EYE,
    R_HIP,
    R_KNEE,
    R_SHOULDER,
    R_TOE,
    R_WRIST,
    Identity,
    Motion,
    Skeleton,
    skeleton,
)

EYE_COLOR = (0.05, 0.05, 0.08)
MOUTH_COLOR = (0.45, 0.05, 0.1)
_CHUNK_PIXELS = 1 << 18  # frame pixels per chunk of frames
RENDER_THREADS = 1  # default torch threads while rendering (see render)


@dataclass
class RenderedClip:
    """frames [T,H,W,3] float32 in [0,1]; joints [T,62,2] float32 pixels (true positions, also of joints
    outside the frame); visible [T,62] bool; face_boxes [T,4] float32 (x0, y0, x1, y1 pixels); expression
    [T,2] float32 (mouth openness, eye openness, both in [0,1]); mask [T,H,W] float32 foreground coverage."""

    frames: torch.Tensor
    joints: torch.Tensor
    visible: torch.Tensor
    face_boxes: torch.Tensor
    expression: torch.Tensor
    mask: torch.Tensor


# ------------------------------------------------------------------------------------------- primitives
# Window grids: xs [T,K,1,k] and ys [T,K,k,1] pixel-centre coordinates; points [T,K,2] (or [T,N,2] against
# grids of one window [T,1,1,k]); results [T,K,k,k] (not reduced over K) unless said otherwise.


def _sub(xs: torch.Tensor, ys: torch.Tensor, p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return xs - p[..., 0, None, None], ys - p[..., 1, None, None]


def _capsule_sd(xs, ys, a: torch.Tensor, b: torch.Tensor, radius: torch.Tensor) -> torch.Tensor:
    """Signed distance to capsules (segments a->b [T,K,2], radius [K])."""
    dx, dy = _sub(xs, ys, a)
    u = b - a
    len2 = (u * u).sum(-1).clamp_min(1e-12)[..., None, None]
    ux, uy = u[..., 0, None, None], u[..., 1, None, None]
    h = (dx * (ux / len2) + dy * (uy / len2)).clamp_(0.0, 1.0)
    ex = torch.addcmul(dx, h, ux, value=-1.0)
    ey = torch.addcmul(dy, h, uy, value=-1.0)
    return torch.hypot(ex, ey).sub_(radius.view(1, -1, 1, 1))


def _circle_sd(xs, ys, c: torch.Tensor, radius: torch.Tensor) -> torch.Tensor:
    """Signed distance to circles centred c [T,K,2] with radius [K]."""
    dx, dy = _sub(xs, ys, c)
    return torch.hypot(dx, dy).sub_(radius.view(1, -1, 1, 1))


def _ellipse_cov(xs, ys, c, e1, ax, ay) -> torch.Tensor:
    """Coverage of ellipses centred c [T,K,2], axes along e1 [T,2] and its perpendicular, semi-axes ax, ay
    [T,K] pixels."""
    dx, dy = _sub(xs, ys, c)
    e1x, e1y = e1[:, 0, None, None, None], e1[:, 1, None, None, None]
    ax_, ay_ = ax.clamp_min(1e-3)[..., None, None], ay.clamp_min(1e-3)[..., None, None]
    qx = (dx * e1x + dy * e1y) / ax_
    qy = (dy * e1x - dx * e1y) / ay_
    return ((1.0 - torch.hypot(qx, qy)) * torch.minimum(ax_, ay_) + 0.5).clamp_(0.0, 1.0)


def _quad_sd(xs, ys, corners: torch.Tensor) -> torch.Tensor:
    """Signed distance (max of the edges' half-plane distances) to convex quads corners [T,4,2] on the grid of
    one window: [T,k,k]."""
    e = corners.roll(-1, dims=1) - corners
    n = torch.stack([e[..., 1], -e[..., 0]], dim=-1) / e.norm(dim=-1, keepdim=True).clamp_min(1e-9)
    flip = ((corners.mean(dim=1, keepdim=True) - corners) * n).sum(-1, keepdim=True) > 0
    n = torch.where(flip, -n, n)  # outward normals
    dx, dy = _sub(xs, ys, corners)
    return (dx * n[..., 0, None, None] + dy * n[..., 1, None, None]).amax(dim=1)


def _cov(sd: torch.Tensor) -> torch.Tensor:
    return (0.5 - sd).clamp_(0.0, 1.0)


# -------------------------------------------------------------------------------------------- windows


class _Windows:
    """K square windows of k x k pixels per frame, centred on centres [T,K,2]; flat indices into a frame of
    H*W pixels plus one discard slot (index H*W) for window pixels outside the frame."""

    def __init__(self, centers: torch.Tensor, k: int, height: int, width: int):
        T, K = centers.shape[:2]
        self.k = k
        origin = torch.floor(centers - (k - 1) / 2).clamp(-k - 1, max(height, width) + 1).to(torch.int64)
        ar = torch.arange(k)
        gx = origin[..., 0, None] + ar  # [T,K,k]
        gy = origin[..., 1, None] + ar
        self.xs = gx.to(torch.float32)[:, :, None, :]
        self.ys = gy.to(torch.float32)[:, :, :, None]
        ok = ((gy >= 0) & (gy < height))[..., :, None] & ((gx >= 0) & (gx < width))[..., None, :]
        idx = gy[..., :, None] * width + gx[..., None, :]
        self.index = torch.where(ok, idx, height * width).reshape(T, K * k * k)


def _window_size(extent: float) -> int:
    return int(math.ceil(extent)) + 3


def _layer(img: torch.Tensor, alpha: torch.Tensor, win: _Windows, cover: torch.Tensor, color) -> None:
    """Composite a flat colour whose coverage is given in K (possibly overlapping) windows, cover [T,K,k,k]:
    the union (max) is scattered into the frame, then composited over the flat img [T,HW+1,3], alpha
    [T,HW+1]."""
    T = cover.shape[0]
    buf = torch.zeros(T, img.shape[1])
    buf.scatter_reduce_(1, win.index, cover.reshape(T, -1), reduce="amax")
    col = torch.tensor(color, dtype=torch.float32)
    img.mul_(1.0 - buf[..., None]).add_(buf[..., None] * col)
    alpha.add_(buf * (1.0 - alpha))


def _paste(img: torch.Tensor, alpha: torch.Tensor, win: _Windows, rgb: torch.Tensor, a: torch.Tensor) -> None:
    """Composite one premultiplied window per frame (rgb [T,k,k,3], a [T,k,k]) over img / alpha (flat)."""
    T = a.shape[0]
    idx3 = win.index[..., None].expand(-1, -1, 3)
    a_flat = a.reshape(T, -1)
    under = img.gather(1, idx3)
    img.scatter_(1, idx3, torch.addcmul(rgb.reshape(T, -1, 3), under, (1.0 - a_flat)[..., None]))
    under_a = alpha.gather(1, win.index)
    alpha.scatter_(1, win.index, under_a + a_flat * (1.0 - under_a))


def _over(rgb: torch.Tensor, a: torch.Tensor, cover: torch.Tensor, color) -> None:
    """Premultiplied compositing inside a window: flat colour (3-tuple or [T,k,k,3]) with coverage [T,k,k]."""
    col = color if isinstance(color, torch.Tensor) else torch.tensor(color, dtype=torch.float32)
    rgb.mul_(1.0 - cover[..., None]).add_(cover[..., None] * col)
    a.mul_(1.0 - cover).add_(cover)


# --------------------------------------------------------------------------------------------- drawing


def _background(identity: Identity, height: int, width: int) -> torch.Tensor:
    """[H*W,3] float32."""
    c1 = torch.tensor(identity.background, dtype=torch.float32)
    if identity.background2 is None:
        return c1.expand(height * width, 3)
    c2 = torch.tensor(identity.background2, dtype=torch.float32)
    ys = torch.arange(height, dtype=torch.float32)[:, None] - (height - 1) / 2
    xs = torch.arange(width, dtype=torch.float32)[None, :] - (width - 1) / 2
    ang = identity.background_angle
    extent = abs(width * math.sin(ang)) + abs(height * math.cos(ang))
    t = ((xs * math.sin(ang) + ys * math.cos(ang)) / max(extent, 1.0) + 0.5).clamp(0, 1)
    return (c1 + (c2 - c1) * t[..., None]).reshape(-1, 3)


def _limbs(img, alpha, sk: Skeleton, sl: slice, pairs, radii, color) -> None:
    j = sk.joints[sl]
    a = j[:, [p for p, _ in pairs]]
    b = j[:, [q for _, q in pairs]]
    radii_t = torch.tensor(radii, dtype=torch.float32)
    span = (b - a).abs().amax() if j.shape[0] else torch.tensor(0.0)
    win = _Windows((a + b) / 2, _window_size(float(span) + 2 * max(radii) + 1), sk.height, sk.width)
    _layer(img, alpha, win, _cov(_capsule_sd(win.xs, win.ys, a, b, radii_t)), color)


def _torso(identity: Identity, img, alpha, sk: Skeleton, sl: slice) -> None:
    j = sk.joints[sl]
    quad = j[:, [L_SHOULDER, R_SHOULDER, R_HIP, L_HIP]]
    center = quad.mean(dim=1, keepdim=True)
    rad = sk.radius
    win = _Windows(center, _window_size(2 * float((quad - center).abs().amax()) + 2 * rad + 1), sk.height,
                   sk.width)
    xs, ys = win.xs, win.ys
    edges = _capsule_sd(xs, ys, quad, quad.roll(-1, dims=1), torch.full((4,), rad)).amin(dim=1)
    cover = _cov(torch.minimum(_quad_sd(xs, ys, quad), edges))
    T, k = cover.shape[0], win.k
    rgb, a = torch.zeros(T, k, k, 3), torch.zeros(T, k, k)
    _over(rgb, a, cover, _torso_color(identity, sk, sl, xs, ys))
    _paste(img, alpha, win, rgb, a)


def _torso_color(identity: Identity, sk: Skeleton, sl: slice, xs, ys):
    if identity.pattern == "solid":
        return tuple(identity.body_color)
    dx, dy = _sub(xs, ys, sk.pelvis[sl][:, None])
    up, side = sk.torso_up[sl], sk.torso_side[sl]
    torso_px = identity.torso * identity.scale * sk.height
    width_px = max(identity.shoulder_width * identity.scale * sk.height, 1e-3)
    u = (dx * up[:, 0, None, None, None] + dy * up[:, 1, None, None, None])[:, 0] / torso_px
    v = (dx * side[:, 0, None, None, None] + dy * side[:, 1, None, None, None])[:, 0] / width_px
    n = identity.stripe_count
    if identity.pattern == "hstripes":
        stripe = torch.sin(2 * math.pi * n * u) > 0
    elif identity.pattern == "vstripes":
        stripe = torch.sin(math.pi * n * v / 2) > 0
    else:
        stripe = torch.sin(math.pi * n * u) * torch.sin(math.pi * n * v / 2) > 0
    body = torch.tensor(identity.body_color, dtype=torch.float32)
    alt = torch.tensor(identity.stripe_color, dtype=torch.float32)
    return torch.where(stripe[..., None], alt, body)


def _head(identity: Identity, img, alpha, sk: Skeleton, sl: slice) -> None:
    j = sk.joints[sl]
    T = j.shape[0]
    r = sk.head_radius
    center = sk.head_center[sl][:, None]
    neck_len = float((j[:, NECK] - center[:, 0]).norm(dim=-1).amax()) if T else 0.0
    win = _Windows(center, _window_size(2 * max(1.3 * r, neck_len + 0.45 * r) + 1), sk.height, sk.width)
    xs, ys = win.xs, win.ys
    rgb, a = torch.zeros(T, win.k, win.k, 3), torch.zeros(T, win.k, win.k)
    skin = tuple(identity.head_color)
    up, side = sk.head_up[sl], sk.head_side[sl]
    _over(rgb, a, _cov(_capsule_sd(xs, ys, j[:, [NECK]], center, torch.tensor([0.42 * r]))[:, 0]), skin)
    ears = _cov(_circle_sd(xs, ys, j[:, [R_EAR, L_EAR]], torch.full((2,), 0.28 * r)))
    ears = ears * (sk.ear_facing[sl] > 0)[..., None, None]
    _over(rgb, a, ears.amax(dim=1), tuple(0.9 * c for c in skin))
    head_cov = _cov(_circle_sd(xs, ys, center, torch.tensor([r]))[:, 0])
    _over(rgb, a, head_cov, skin)
    if identity.hair_line < 1.0:  # hair: the head above the hair line
        dx, dy = _sub(xs, ys, center)
        along = (dx * up[:, 0, None, None, None] + dy * up[:, 1, None, None, None])[:, 0]
        _over(rgb, a, head_cov * (along - identity.hair_line * r + 0.5).clamp(0, 1), identity.hair_color)
    facing = sk.eye_facing[sl]
    ax = 0.17 * r * facing.clamp(0.2, 1.0)
    ay = (r * (0.025 + 0.15 * sk.expression[sl, 1]))[:, None].expand(-1, 2)
    eyes = _ellipse_cov(xs, ys, j[:, [R_EYE, L_EYE]], side, ax, ay) * (facing > 0.2)[..., None, None]
    _over(rgb, a, eyes.amax(dim=1), EYE_COLOR)
    nose = _cov(_circle_sd(xs, ys, j[:, [NOSE]], torch.tensor([max(0.09 * r, 0.5)]))[:, 0])
    _over(rgb, a, nose, tuple(0.75 * c for c in skin))
    m_ax = (0.3 * r * torch.cos(sk.yaw[sl]).clamp(0.3, 1.0))[:, None]
    m_ay = (r * (0.035 + 0.25 * sk.expression[sl, 0]))[:, None]
    _over(rgb, a, _ellipse_cov(xs, ys, sk.mouth_center[sl][:, None], side, m_ax, m_ay)[:, 0], MOUTH_COLOR)
    _paste(img, alpha, win, rgb, a)


_HAND_PAIRS = [(0, 9), (5, 17)] + list(HAND_BONES)  # palm (wrist -> middle knuckle), knuckle bar, bones
_HAND_A = torch.tensor([p for p, _ in _HAND_PAIRS])
_HAND_B = torch.tensor([q for _, q in _HAND_PAIRS])


def _hand(identity: Identity, img, alpha, sk: Skeleton, sl: slice, start: int) -> None:
    hand = sk.joints[sl, start:start + 21]
    T = hand.shape[0]
    reach = float((hand - hand[:, :1]).norm(dim=-1).amax()) if T else 0.0
    half = reach + max(sk.palm_radius, sk.finger_radius)
    win = _Windows(hand[:, :1], _window_size(2 * half + 1), sk.height, sk.width)
    radii = torch.tensor([sk.palm_radius] + [sk.finger_radius] * (len(_HAND_PAIRS) - 1))
    cover = _cov(_capsule_sd(win.xs, win.ys, hand[:, _HAND_A], hand[:, _HAND_B], radii).amin(dim=1))
    col = torch.tensor(identity.head_color, dtype=torch.float32)
    _paste(img, alpha, win, cover[..., None] * col, cover)


def _draw_chunk(identity: Identity, sk: Skeleton, sl: slice, bg: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    H, W = sk.height, sk.width
    T = sk.joints[sl].shape[0]
    img = torch.cat([bg, bg.new_zeros(1, 3)]).expand(T, H * W + 1, 3).clone()  # + the discard slot
    alpha = torch.zeros(T, H * W + 1)
    rad, leg_r = sk.radius, sk.leg_radius
    legs = [(L_HIP, L_KNEE), (L_KNEE, L_ANKLE), (L_ANKLE, L_TOE), (R_HIP, R_KNEE), (R_KNEE, R_ANKLE),
            (R_ANKLE, R_TOE), (L_HIP, R_HIP)]
    _limbs(img, alpha, sk, sl, legs, [leg_r, leg_r, 0.8 * leg_r] * 2 + [leg_r], identity.legs_color)
    _torso(identity, img, alpha, sk, sl)
    sleeve = tuple(0.85 * c for c in identity.body_color)
    _limbs(img, alpha, sk, sl, [(L_SHOULDER, L_ELBOW), (R_SHOULDER, R_ELBOW)], [rad, rad], sleeve)
    _limbs(img, alpha, sk, sl, [(L_ELBOW, L_WRIST), (R_ELBOW, R_WRIST)], [0.9 * rad, 0.9 * rad],
           identity.head_color)
    _head(identity, img, alpha, sk, sl)
    for start in (LEFT_HAND_START, RIGHT_HAND_START):
        _hand(identity, img, alpha, sk, sl, start)
    return img[:, :-1].reshape(T, H, W, 3), alpha[:, :-1].reshape(T, H, W)


@contextmanager
def torch_threads(threads: int | None):
    """Run the block with at most ``threads`` torch intra-op threads (None: unchanged), restoring the setting
    afterwards. The setting is process-wide: do not render from several Python threads at once with it."""
    before = torch.get_num_threads()
    if threads is None or threads >= before:
        yield
        return
    torch.set_num_threads(max(1, int(threads)))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def render(identity: Identity, curves: torch.Tensor, height: int, width: int, *,
           threads: int | None = RENDER_THREADS) -> RenderedClip:
    """Render pose channels curves [T,NUM_CHANNELS] (``Motion.curves``) on ``identity`` at height x width.

    threads: torch intra-op threads while rendering (restored afterwards; None leaves the setting alone). The
    renderer's many small, memory-bound operations run fastest on one thread; with more, each operation's
    fork-join costs more than it saves and, on a busy machine, can be tens of times slower.
    """
    if height < 8 or width < 8:
        raise ValueError(f"frames must be at least 8x8 pixels, got {height}x{width}")
    with torch_threads(threads):
        return _render(identity, curves, height, width)


def _render(identity: Identity, curves: torch.Tensor, height: int, width: int) -> RenderedClip:
    sk = skeleton(identity, curves, height, width)
    T = sk.joints.shape[0]
    if T == 0:
        raise ValueError("nothing to render: the pose curves have 0 frames")
    bg = _background(identity, height, width)
    chunk = max(1, min(T, _CHUNK_PIXELS // (height * width)))
    frames, masks = [], []
    for lo in range(0, T, chunk):
        img, alpha = _draw_chunk(identity, sk, slice(lo, lo + chunk), bg)
        frames.append(img.clamp_(0, 1))
        masks.append(alpha)
    boxes = face_boxes_from_joints(sk.joints, sk.visible, height, width)
    return RenderedClip(frames=torch.cat(frames), joints=sk.joints, visible=sk.visible, face_boxes=boxes,
                        expression=sk.expression, mask=torch.cat(masks))


def render_sample(identity: Identity, motion: Motion, frames: int, height: int, width: int,
                  start: float = 0.0, *, threads: int | None = RENDER_THREADS) -> RenderedClip:
    """``motion`` from frame ``start`` on (``frames`` frames) rendered on ``identity``."""
    return render(identity, motion.curves(frames, start), height, width, threads=threads)


def render_rest(identity: Identity, height: int, width: int, *, threads: int | None = RENDER_THREADS
                ) -> RenderedClip:
    """One frame of ``identity`` in the rest pose (arms slightly out, hands relaxed, mouth closed)."""
    return render(identity, Motion.rest().curves(1), height, width, threads=threads)


def render_clip(identity: Identity, motion: Motion, frames: int, height: int, width: int) -> torch.Tensor:
    """Render ``frames`` frames: [T,H,W,3] float32 in [0,1]."""
    return render_sample(identity, motion, frames, height, width).frames
