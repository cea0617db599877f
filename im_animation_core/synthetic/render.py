"""Render a 2D articulated character: identity = proportions, thickness, colours, scale, position and
background; motion = joint-angle curves over time, applied by forward kinematics."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

# limb: (name, parent joint, length key); joints are computed in this order from the pelvis.
LIMBS = [
    ("neck", "pelvis", "torso"), ("head", "neck", "neck_len"),
    ("l_elbow", "neck", "upper_arm"), ("l_wrist", "l_elbow", "forearm"),
    ("r_elbow", "neck", "upper_arm"), ("r_wrist", "r_elbow", "forearm"),
    ("l_knee", "pelvis", "thigh"), ("l_ankle", "l_knee", "shin"),
    ("r_knee", "pelvis", "thigh"), ("r_ankle", "r_knee", "shin"),
]


@dataclass
class Identity:
    """Body proportions in units of the frame height, plus appearance."""

    torso: float = 0.26
    neck_len: float = 0.06
    head_radius: float = 0.06
    upper_arm: float = 0.14
    forearm: float = 0.13
    thigh: float = 0.17
    shin: float = 0.17
    thickness: float = 0.025
    scale: float = 1.0
    center_x: float = 0.5
    pelvis_y: float = 0.55
    body_color: tuple = (0.9, 0.3, 0.2)
    head_color: tuple = (0.95, 0.8, 0.6)
    background: tuple = (0.15, 0.2, 0.3)


@dataclass
class Motion:
    """Periodic joint angles (radians, 0 = pointing down) with a period in frames."""

    period: float = 24.0
    arm_swing: float = 1.2
    leg_swing: float = 0.5
    torso_sway: float = 0.15
    phase: float = 0.0

    def angles(self, t: float) -> dict[str, float]:
        w = 2 * math.pi * t / self.period + self.phase
        s = math.sin(w)
        return {
            "neck": math.pi + self.torso_sway * s, "head": math.pi + self.torso_sway * s,
            "l_elbow": 0.5 + self.arm_swing * (0.5 + 0.5 * s), "l_wrist": 0.3 + self.arm_swing * (0.5 + 0.5 * s),
            "r_elbow": -0.5 - self.arm_swing * (0.5 - 0.5 * s), "r_wrist": -0.3 - self.arm_swing * (0.5 - 0.5 * s),
            "l_knee": 0.15 + self.leg_swing * s, "l_ankle": 0.1 + self.leg_swing * s,
            "r_knee": -0.15 - self.leg_swing * s, "r_ankle": -0.1 - self.leg_swing * s,
        }


def joints_at(identity: Identity, motion: Motion, t: float, height: int, width: int) -> dict[str, tuple]:
    """Joint positions in pixels (x, y) at frame t, by forward kinematics from the pelvis."""
    s = identity.scale * height
    pos = {"pelvis": (identity.center_x * width, identity.pelvis_y * height)}
    angles = motion.angles(t)
    for joint, parent, length_key in LIMBS:
        a, length = angles[joint], getattr(identity, length_key) * s
        px, py = pos[parent]
        pos[joint] = (px + length * math.sin(a), py + length * math.cos(a))
    return pos


def _segment_mask(xx, yy, p, q, radius):
    px, py = p
    qx, qy = q
    dx, dy = qx - px, qy - py
    t = (((xx - px) * dx + (yy - py) * dy) / max(dx * dx + dy * dy, 1e-6)).clamp(0, 1)
    return ((xx - px - t * dx) ** 2 + (yy - py - t * dy) ** 2) <= radius**2


def render_clip(identity: Identity, motion: Motion, frames: int, height: int, width: int) -> torch.Tensor:
    """Render ``frames`` frames: [T,H,W,3] float32 in [0,1]."""
    yy, xx = torch.meshgrid(torch.arange(height, dtype=torch.float32) + 0.5,
                            torch.arange(width, dtype=torch.float32) + 0.5, indexing="ij")
    out = torch.empty(frames, height, width, 3)
    radius = identity.thickness * identity.scale * height
    for t in range(frames):
        img = torch.tensor(identity.background).expand(height, width, 3).clone()
        pos = joints_at(identity, motion, t, height, width)
        body = torch.zeros(height, width, dtype=torch.bool)
        for joint, parent, _ in LIMBS:
            if joint != "head":
                body |= _segment_mask(xx, yy, pos[parent], pos[joint], radius)
        img[body] = torch.tensor(identity.body_color)
        hx, hy = pos["head"]
        head = (xx - hx) ** 2 + (yy - hy) ** 2 <= (identity.head_radius * identity.scale * height) ** 2
        img[head] = torch.tensor(identity.head_color)
        out[t] = img
    return out
