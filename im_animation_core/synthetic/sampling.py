"""Seeded random identities and motions, with a train split and a held-out split that never overlap.

Split definition. Each split-controlled parameter has an overall range cut into equal bands; the train split
draws from the even bands (the first, third, ...), the held-out split from the odd bands between them, so
every held-out value lies outside the union of the training ranges (never seen in training) yet inside the
overall range (no extrapolation to impossible bodies). Draws keep 2 % of a band's width away from its edges
so that a value read back from an Identity / Motion (after float round trips such as HSV -> RGB -> HSV)
lands in the same band. ``SPLIT_RANGES`` lists the bands; ``identity_split_values`` and
``motion_split_values`` read a drawn object's controlled values back, ``split_of`` says which split they
belong to.

Identity (lengths in fractions of the frame height at scale 1; see character.Identity):
    torso [0.20, 0.34], leg = thigh + shin [0.26, 0.46], arm = upper_arm + forearm [0.20, 0.36],
    head_radius [0.045, 0.085], shoulder_width [0.05, 0.11], thickness [0.014, 0.034] (5 bands each:
    train 3, held-out 2); fill = figure height / frame height [0.50, 0.92] (5 bands); shirt_hue, the hue of
    body_color, [0, 1) in 6 bands (train: red-orange, green-cyan, blue-violet; held-out: yellow-green,
    azure, magenta-red). Not split: position in the frame, hip width, neck, hands, feet, skin, hair, trousers,
    pattern, background.
Motion: period [10, 40] frames, amplitude (the kind's main amplitude as a fraction of its maximum)
    [0.4, 1.0], hand_period [8, 32], mouth_period [6, 30], blink_period [12, 48] (5 bands each). The kinds
    (walk, wave, dance, turn) are shared by both splits; secondary amplitudes and phases are not split.
"""

from __future__ import annotations

import colorsys
import dataclasses
import math

import torch

from .character import MOTION_KINDS, PATTERNS, Identity, Motion

SPLITS = ("train", "heldout")
_MARGIN = 0.02


def _bands(lo: float, hi: float, n: int) -> dict[str, list[tuple[float, float]]]:
    edges = [lo + (hi - lo) * i / n for i in range(n + 1)]
    bands = list(zip(edges[:-1], edges[1:], strict=True))
    return {"train": bands[0::2], "heldout": bands[1::2]}


SPLIT_RANGES: dict[str, dict[str, list[tuple[float, float]]]] = {
    # identity
    "torso": _bands(0.20, 0.34, 5),
    "leg": _bands(0.26, 0.46, 5),
    "arm": _bands(0.20, 0.36, 5),
    "head_radius": _bands(0.045, 0.085, 5),
    "shoulder_width": _bands(0.05, 0.11, 5),
    "thickness": _bands(0.014, 0.034, 5),
    "fill": _bands(0.50, 0.92, 5),
    "shirt_hue": _bands(0.0, 1.0, 6),
    # motion
    "period": _bands(10.0, 40.0, 5),
    "amplitude": _bands(0.4, 1.0, 5),
    "hand_period": _bands(8.0, 32.0, 5),
    "mouth_period": _bands(6.0, 30.0, 5),
    "blink_period": _bands(12.0, 48.0, 5),
}
IDENTITY_SPLIT_KEYS = ("torso", "leg", "arm", "head_radius", "shoulder_width", "thickness", "fill", "shirt_hue")
MOTION_SPLIT_KEYS = ("period", "amplitude", "hand_period", "mouth_period", "blink_period")

# Each kind's main amplitude field and its maximum.
KIND_AMPLITUDE = {"walk": ("arm_swing", 1.4), "wave": ("wave", 0.9), "dance": ("dance", 1.0), "turn": ("turn", 0.9)}


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")


def _rand(g: torch.Generator) -> float:
    return float(torch.rand((), generator=g, dtype=torch.float64))


def _uniform(g: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * _rand(g)


def _choice(g: torch.Generator, options):
    return options[int(torch.randint(len(options), (), generator=g))]


def _split_value(g: torch.Generator, name: str, split: str) -> float:
    lo, hi = _choice(g, SPLIT_RANGES[name][split])
    return lo + (hi - lo) * (_MARGIN + (1 - 2 * _MARGIN) * _rand(g))


def _hsv(h: float, s: float, v: float) -> tuple[float, float, float]:
    return tuple(float(c) for c in colorsys.hsv_to_rgb(h % 1.0, min(max(s, 0.0), 1.0), min(max(v, 0.0), 1.0)))


_SKIN_LIGHT, _SKIN_DARK = (0.97, 0.82, 0.69), (0.42, 0.26, 0.16)
_HAIR = ((0.08, 0.06, 0.05), (0.35, 0.2, 0.1), (0.85, 0.7, 0.4), (0.6, 0.25, 0.1), (0.6, 0.6, 0.62))


def sample_identity(generator: torch.Generator, split: str = "train") -> Identity:
    """A random character whose split-controlled parameters lie in ``split``'s ranges (see module doc)."""
    _check_split(split)
    g = generator
    torso = _split_value(g, "torso", split)
    leg = _split_value(g, "leg", split)
    arm = _split_value(g, "arm", split)
    head_radius = _split_value(g, "head_radius", split)
    shoulder = _split_value(g, "shoulder_width", split)
    thickness = _split_value(g, "thickness", split)
    fill = _split_value(g, "fill", split)
    hue = _split_value(g, "shirt_hue", split)
    thigh_frac = _uniform(g, 0.47, 0.55)
    upper_frac = _uniform(g, 0.48, 0.56)
    neck_len = _uniform(g, 0.015, 0.045)
    hip = shoulder * _uniform(g, 0.55, 0.95)
    forearm = arm * (1 - upper_frac)
    palm = forearm * _uniform(g, 0.28, 0.36)
    finger = palm * _uniform(g, 0.8, 1.0)
    foot = _uniform(g, 0.04, 0.065)
    leg_thickness = thickness * _uniform(g, 1.1, 1.5)
    raw_height = leg + torso + neck_len + 2 * head_radius
    scale = fill / raw_height

    # placement: the whole standing figure inside the frame (8 % margin), arms may leave it when raised
    top = scale * (torso + neck_len + 2 * head_radius)
    bottom = scale * (leg + 0.5 * foot)
    lo, hi = 0.04 + top, 0.96 - bottom
    pelvis_y = _uniform(g, lo, hi) if hi > lo else (lo + hi) / 2
    center_x = _uniform(g, 0.3, 0.7)

    # colours
    body = _hsv(hue, _uniform(g, 0.45, 0.9), _uniform(g, 0.55, 0.95))
    light_bg = _rand(g) < 0.5
    bg_h, bg_s = _rand(g), _uniform(g, 0.05, 0.4)
    bg_v = _uniform(g, 0.72, 0.95) if light_bg else _uniform(g, 0.06, 0.3)
    background = _hsv(bg_h, bg_s, bg_v)
    gradient = _rand(g) < 0.5
    bg2_h, bg2_dv, bg_angle = bg_h + _uniform(g, -0.08, 0.08), _uniform(g, 0.1, 0.25), _uniform(g, 0, 2 * math.pi)
    background2 = _hsv(bg2_h, bg_s, bg_v - bg2_dv if light_bg else bg_v + bg2_dv) if gradient else None
    leg_color = _hsv(_rand(g), _uniform(g, 0.15, 0.7), _uniform(g, 0.12, 0.4) if light_bg else _uniform(g, 0.55, 0.8))
    t = _rand(g)
    skin = tuple(a + (b - a) * t for a, b in zip(_SKIN_LIGHT, _SKIN_DARK, strict=True))
    hair = _choice(g, _HAIR)
    hair_line = 1.5 if _rand(g) < 0.15 else _uniform(g, -0.1, 0.6)
    pattern = _choice(g, PATTERNS)
    stripe_count = int(torch.randint(2, 7, (), generator=g))
    h_, s_, v_ = colorsys.rgb_to_hsv(*body)
    stripe = _hsv(h_, s_ * _uniform(g, 0.1, 0.5), 1.0 - 0.7 * v_ if _rand(g) < 0.5 else 0.98)
    return Identity(
        torso=torso, neck_len=neck_len, head_radius=head_radius, shoulder_width=shoulder, hip_width=hip,
        upper_arm=arm * upper_frac, forearm=forearm, thigh=leg * thigh_frac, shin=leg * (1 - thigh_frac),
        foot=foot, palm=palm, finger=finger, thickness=thickness, leg_thickness=leg_thickness, scale=scale,
        center_x=center_x, pelvis_y=pelvis_y, body_color=body, leg_color=leg_color, head_color=skin,
        hair_color=hair, hair_line=hair_line, pattern=pattern, stripe_color=stripe, stripe_count=stripe_count,
        background=background, background2=background2, background_angle=bg_angle,
    )


def sample_motion(generator: torch.Generator, split: str = "train", kind: str | None = None) -> Motion:
    """A random motion of ``kind`` (None: drawn from MOTION_KINDS) whose split-controlled parameters lie in
    ``split``'s ranges (see module doc)."""
    _check_split(split)
    g = generator
    drawn_kind = _choice(g, MOTION_KINDS)
    kind = kind or drawn_kind
    if kind not in MOTION_KINDS:
        raise ValueError(f"kind must be one of {MOTION_KINDS}, got {kind!r}")
    period = _split_value(g, "period", split)
    amp = _split_value(g, "amplitude", split)
    hand_period = _split_value(g, "hand_period", split)
    mouth_period = _split_value(g, "mouth_period", split)
    blink_period = _split_value(g, "blink_period", split)
    m = dict(
        period=period, phase=_uniform(g, 0, 2 * math.pi), arm_swing=0.0, leg_swing=0.0,
        torso_sway=_uniform(g, 0.0, 0.12), head_nod=_uniform(g, 0.0, 0.2), bounce=_uniform(g, 0.0, 0.03),
        hand_curl=_uniform(g, 0.5, 1.0), hand_period=hand_period, hand_phase=_uniform(g, 0, 2 * math.pi),
        mouth=_uniform(g, 0.3, 1.0) if _rand(g) < 0.8 else 0.0, mouth_period=mouth_period,
        mouth_phase=_uniform(g, 0, 2 * math.pi), blink_period=blink_period,
        blink_offset=_uniform(g, 0, blink_period), wave_arm=_choice(g, ("left", "right")), kind=kind,
    )
    secondary = _uniform(g, 0.0, 1.0)
    field, top = KIND_AMPLITUDE[kind]
    m[field] = amp * top
    if kind == "walk":
        m["leg_swing"] = 0.3 + 0.5 * secondary
    elif kind == "wave":
        m["leg_swing"] = 0.1 * secondary
    elif kind == "dance":
        m["leg_swing"] = 0.2 * secondary
        m["turn"] = 0.3 * secondary
    else:  # turn
        m["arm_swing"] = 0.2 + 0.4 * secondary
        m["leg_swing"] = 0.1 * secondary
    return Motion(**m)


def identity_split_values(identity: Identity) -> dict[str, float]:
    """The split-controlled parameters of an identity (IDENTITY_SPLIT_KEYS)."""
    return {
        "torso": identity.torso, "leg": identity.thigh + identity.shin,
        "arm": identity.upper_arm + identity.forearm, "head_radius": identity.head_radius,
        "shoulder_width": identity.shoulder_width, "thickness": identity.thickness,
        "fill": identity.figure_height(), "shirt_hue": colorsys.rgb_to_hsv(*identity.body_color)[0],
    }


def motion_split_values(motion: Motion) -> dict[str, float]:
    """The split-controlled parameters of a motion drawn by sample_motion (MOTION_SPLIT_KEYS)."""
    if motion.kind not in KIND_AMPLITUDE:
        raise ValueError(f"motion kind {motion.kind!r} was not drawn by sample_motion")
    field, top = KIND_AMPLITUDE[motion.kind]
    return {
        "period": motion.period, "amplitude": getattr(motion, field) / top, "hand_period": motion.hand_period,
        "mouth_period": motion.mouth_period, "blink_period": motion.blink_period,
    }


def in_split(name: str, value: float, split: str) -> bool:
    """Whether ``value`` of parameter ``name`` lies in one of ``split``'s bands (closed intervals)."""
    return any(lo <= value <= hi for lo, hi in SPLIT_RANGES[name][split])


def split_of(values: dict[str, float]) -> str | None:
    """'train' / 'heldout' when every value lies in that split's bands, else None."""
    for split in SPLITS:
        if all(in_split(k, v, split) for k, v in values.items()):
            return split
    return None


def luminance(rgb: tuple) -> float:
    """Rec. 601 luma of an RGB colour in [0, 1]."""
    r, g, b = rgb
    return 0.299 * r + 0.587 * g + 0.114 * b


def _away_from(rgb: tuple, background: float, min_contrast: float) -> tuple:
    """rgb moved, hue kept, until its luma differs from ``background`` by at least ``min_contrast``: darkened
    (scaled towards black) on a light background, lightened (blended towards white) on a dark one."""
    lum = luminance(rgb)
    if abs(lum - background) >= min_contrast:
        return tuple(rgb)
    if background >= 0.5:
        goal = max(background - min_contrast, 0.0)
        return tuple(c * goal / max(lum, 1e-6) for c in rgb)
    goal = min(background + min_contrast, 1.0)
    t = (goal - lum) / max(1.0 - lum, 1e-6)
    return tuple(c + t * (1.0 - c) for c in rgb)


def with_min_contrast(identity: Identity, min_contrast: float) -> Identity:
    """``identity`` with its shirt, trousers, skin and hair recoloured (hue kept, so the shirt_hue split is
    unchanged) so that each differs in luma by at least ``min_contrast`` from the background (both ends of a
    gradient). Limbs of a colour close to the background's vanish in a small VAE's latents."""
    if min_contrast <= 0:
        return identity
    ends = [identity.background] + ([identity.background2] if identity.background2 is not None else [])
    lums = [luminance(c) for c in ends]
    # the side of the background the colours move away from: its lighter end on a light one, else its darker
    bg = max(lums) if sum(lums) / len(lums) >= 0.5 else min(lums)
    recolour = {name: _away_from(getattr(identity, name), bg, min_contrast)
                for name in ("body_color", "head_color", "hair_color")}
    recolour["leg_color"] = _away_from(identity.legs_color, bg, min_contrast)
    return dataclasses.replace(identity, **recolour)
