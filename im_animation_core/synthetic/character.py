"""Articulated 2D characters: identity (body and look), motion (joint-angle curves) and forward kinematics.

Coordinates. Lengths of an ``Identity`` are fractions of the frame height at ``scale`` 1; on screen a
length L is ``L * scale * height`` pixels. Image points are (x, y) pixels, x to the right, y down, integer
values at pixel centres (the convention of ``im_animation_core.keypoints``). A direction angle theta
(radians) points along d(theta) = (sin theta, cos theta): 0 = straight down, pi/2 = image right, pi = up.

Sides. The character faces the viewer, so the person's left side is on the image's right. Limb angles of a
``Motion`` are mirrored per side: an abduction angle a of the left arm turns it by +a (towards image right,
away from the body), of the right arm by -a. Positive elbow/knee angles bend further outwards.

The 62 joints follow ``keypoints.JOINT_NAMES``: 18 OpenPose body points, the two big toes, 21 points per hand
(wrist, then 4 per finger from thumb to little finger). The same ``Motion`` (joint angles, root movement in
units of the body's own leg length, hand curls, mouth and eyes) drives any ``Identity``: this is what makes
exact cross-reenactment ground truth.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..keypoints import LEFT_HAND_START, NUM_JOINTS, RIGHT_HAND_START

# ---------------------------------------------------------------------------------------------- identity


@dataclass
class Identity:
    """A character: body proportions (fractions of the frame height at scale 1), thickness, colours,
    pattern, scale, position in the frame and background.

    torso: neck to hip midpoint. neck_len: neck to the bottom of the head. head_radius: head circle.
    shoulder_width / hip_width: half widths (neck to shoulder, hip midpoint to hip) seen from the front.
    upper_arm, forearm, thigh, shin: limb lengths. foot: ankle to big toe. palm: wrist to the middle
    finger's knuckle; finger: middle finger length (the other fingers are fixed fractions of it).
    thickness: arm radius; leg_thickness: leg radius (None: 1.25 x thickness); fingers are 0.4 x thickness.
    scale: multiplies every length. center_x: hip midpoint x as a fraction of the width; pelvis_y: hip
    midpoint y as a fraction of the height (before the motion's root movement).
    body_color: shirt (torso and arms); leg_color: trousers (None: body_color darkened); head_color: skin
    (head, neck, hands); hair_color and hair_line: hair covers the head above hair_line x head_radius from
    its centre (>= 1: bald); pattern: "solid", "hstripes", "vstripes" or "checker" on the torso, in
    stripe_color with stripe_count stripes along the torso.
    background: RGB; background2: second RGB of a linear gradient (None: solid); background_angle: the
    gradient's direction (radians, 0 = top to bottom).
    """

    torso: float = 0.26
    neck_len: float = 0.03
    head_radius: float = 0.06
    shoulder_width: float = 0.07
    hip_width: float = 0.05
    upper_arm: float = 0.14
    forearm: float = 0.13
    thigh: float = 0.17
    shin: float = 0.17
    foot: float = 0.05
    palm: float = 0.045
    finger: float = 0.04
    thickness: float = 0.025
    leg_thickness: float | None = None
    scale: float = 1.0
    center_x: float = 0.5
    pelvis_y: float = 0.55
    body_color: tuple = (0.9, 0.3, 0.2)
    leg_color: tuple | None = None
    head_color: tuple = (0.95, 0.8, 0.6)
    hair_color: tuple = (0.25, 0.15, 0.08)
    hair_line: float = 0.35
    pattern: str = "solid"
    stripe_color: tuple = (0.95, 0.95, 0.9)
    stripe_count: int = 4
    background: tuple = (0.15, 0.2, 0.3)
    background2: tuple | None = None
    background_angle: float = 0.0

    def __post_init__(self) -> None:
        if self.pattern not in PATTERNS:
            raise ValueError(f"pattern must be one of {PATTERNS}, got {self.pattern!r}")

    @property
    def legs_color(self) -> tuple:
        return self.leg_color if self.leg_color is not None else tuple(0.6 * c for c in self.body_color)

    @property
    def leg_radius(self) -> float:
        return self.leg_thickness if self.leg_thickness is not None else 1.25 * self.thickness

    def figure_height(self) -> float:
        """Height of the standing figure (feet to the top of the head) as a fraction of the frame height."""
        return self.scale * (self.thigh + self.shin + self.torso + self.neck_len + 2 * self.head_radius)


PATTERNS = ("solid", "hstripes", "vstripes", "checker")

# ---------------------------------------------------------------------------------------------- motion

# Pose channels, one value per frame. Angles in radians; root_x/root_y in units of the identity's leg length
# (thigh + shin, scaled); curls, mouth and eyes in [0, 1] (0 = open hand / closed mouth / closed eyes).
MOTION_CHANNELS: tuple[str, ...] = (
    "root_x", "root_y", "lean", "turn", "head_tilt", "head_turn",
    "l_shoulder", "l_elbow", "l_wrist", "r_shoulder", "r_elbow", "r_wrist",
    "l_hip", "l_knee", "l_ankle", "r_hip", "r_knee", "r_ankle",
    "l_curl", "r_curl", "mouth", "eyes",
)
CH = {name: i for i, name in enumerate(MOTION_CHANNELS)}
NUM_CHANNELS = len(MOTION_CHANNELS)

# The rest pose (all of a Motion's amplitudes zero): arms slightly away from the body, feet apart and turned
# out, hands relaxed, mouth closed, eyes open.
REST_POSE: dict[str, float] = {
    "l_shoulder": 0.25, "r_shoulder": 0.25, "l_elbow": 0.1, "r_elbow": 0.1,
    "l_hip": 0.07, "r_hip": 0.07, "l_ankle": 1.1, "r_ankle": 1.1,
    "l_curl": 0.15, "r_curl": 0.15, "eyes": 1.0,
}
MOTION_KINDS = ("walk", "wave", "dance", "turn")


@dataclass
class Motion:
    """Periodic joint-angle curves, a sum of components over the rest pose (every amplitude 0 = rest).

    period: frames per cycle of the body movement; phase: its phase (radians) at frame 0.
    arm_swing / leg_swing: walk-like alternating swing of arms / legs (radians). torso_sway: side lean.
    wave: amplitude of waving the forearm of wave_arm ("left" / "right"; the arm is raised while wave > 0).
    dance: dance-like moves (alternating raised arms, hip sway, knee bounce). turn: torso yaw amplitude
    (shoulders and hips narrow, the face turns). bounce: vertical root bob (fraction of the leg length).
    head_nod: head tilt amplitude. hand_curl: hands close up to this (0..1), period hand_period frames.
    mouth: mouth opening up to this (0..1), period mouth_period. blink_period: frames between blinks (0 =
    never), first blink at blink_offset. kind: a label ("walk", "wave", "dance", "turn" or "custom").
    """

    period: float = 24.0
    arm_swing: float = 1.2
    leg_swing: float = 0.5
    torso_sway: float = 0.15
    phase: float = 0.0
    wave: float = 0.0
    wave_arm: str = "right"
    dance: float = 0.0
    turn: float = 0.0
    bounce: float = 0.0
    head_nod: float = 0.0
    hand_curl: float = 0.0
    hand_period: float = 16.0
    hand_phase: float = 0.0
    mouth: float = 0.0
    mouth_period: float = 12.0
    mouth_phase: float = 0.0
    blink_period: float = 0.0
    blink_offset: float = 0.0
    kind: str = "custom"

    def __post_init__(self) -> None:
        if self.wave_arm not in ("left", "right"):
            raise ValueError(f"wave_arm must be 'left' or 'right', got {self.wave_arm!r}")
        for name in ("period", "hand_period", "mouth_period"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")

    @classmethod
    def rest(cls) -> Motion:
        """The still rest pose."""
        return cls(arm_swing=0.0, leg_swing=0.0, torso_sway=0.0, kind="rest")

    def curves(self, frames: int, start: float = 0.0) -> torch.Tensor:
        """Pose channels at frames start, start + 1, ...: [frames, NUM_CHANNELS] float64 (MOTION_CHANNELS)."""
        t = torch.arange(frames, dtype=torch.float64) + start
        out = torch.zeros(frames, NUM_CHANNELS, dtype=torch.float64)
        for name, v in REST_POSE.items():
            out[:, CH[name]] = v

        def add(name: str, v) -> None:
            out[:, CH[name]] += v

        w = 2 * math.pi * t / self.period + self.phase
        s, c = torch.sin(w), torch.cos(w)
        # walk: alternating arm and leg swing, the lifted leg's knee bends inwards, the body bobs
        a, lg = self.arm_swing, self.leg_swing
        add("l_shoulder", 0.5 * a * (1 + s))
        add("r_shoulder", 0.5 * a * (1 - s))
        add("l_elbow", 0.4 * a * (1 + s))
        add("r_elbow", 0.4 * a * (1 - s))
        add("l_hip", 0.5 * lg * s)
        add("r_hip", -0.5 * lg * s)
        add("l_knee", -0.8 * lg * s.clamp(min=0))
        add("r_knee", -0.8 * lg * (-s).clamp(min=0))
        add("root_y", -0.04 * lg * s.abs())
        add("lean", self.torso_sway * s)
        # wave: one arm raised, forearm waving at twice the body frequency, that hand open
        if self.wave > 0:
            side = "l" if self.wave_arm == "left" else "r"
            raise_ = 1.2 + 0.3 * self.wave
            add(f"{side}_shoulder", raise_ - REST_POSE[f"{side}_shoulder"] + 0.15 * self.wave * s)
            add(f"{side}_elbow", 1.3 + self.wave * torch.sin(2 * w))
            add(f"{side}_wrist", 0.3 * self.wave * torch.sin(2 * w - 0.6))
            add(f"{side}_curl", -REST_POSE[f"{side}_curl"])
        # dance: arms alternately up and down, hips sway, knees bounce at twice the frequency
        d = self.dance
        add("l_shoulder", d * (0.9 + 0.8 * s))
        add("r_shoulder", d * (0.9 - 0.8 * s))
        add("l_elbow", 0.7 * d * (0.5 + 0.5 * c))
        add("r_elbow", 0.7 * d * (0.5 - 0.5 * c))
        add("lean", 0.22 * d * s)
        add("root_x", 0.12 * d * s)
        bob = 0.5 - 0.5 * torch.cos(2 * w)
        add("root_y", 0.06 * d * bob)
        add("l_knee", -0.35 * d * bob)
        add("r_knee", -0.35 * d * bob)
        add("l_hip", 0.12 * d * bob)
        add("r_hip", 0.12 * d * bob)
        add("head_tilt", 0.18 * d * torch.sin(w + 1.0))
        # turn: torso yaw, the head follows with a lag
        add("turn", self.turn * s)
        add("head_turn", 0.4 * self.turn * torch.sin(w - 0.5))
        # extras
        add("root_y", -self.bounce * s.abs())
        add("head_tilt", self.head_nod * torch.sin(2 * w + 0.3))
        if self.hand_curl > 0:
            wh = 2 * math.pi * t / self.hand_period + self.hand_phase
            add("l_curl", self.hand_curl * (0.5 - 0.5 * torch.cos(wh)))
            add("r_curl", self.hand_curl * (0.5 - 0.5 * torch.cos(wh + 0.5 * math.pi)))
        if self.mouth > 0:
            wm = 2 * math.pi * t / self.mouth_period + self.mouth_phase
            add("mouth", self.mouth * torch.sin(wm).clamp(min=0))
        if self.blink_period > 0:
            dist = torch.remainder(t - self.blink_offset, self.blink_period)
            dist = torch.minimum(dist, self.blink_period - dist)
            add("eyes", -0.95 * torch.exp(-0.5 * (dist / 0.7) ** 2))
        for name in ("l_curl", "r_curl", "mouth", "eyes"):
            out[:, CH[name]] = out[:, CH[name]].clamp(0.0, 1.0)
        return out


def expression_from_curves(curves: torch.Tensor) -> torch.Tensor:
    """[T,NUM_CHANNELS] pose channels -> [T,2] float32 expression state (mouth openness, eye openness)."""
    return curves[:, [CH["mouth"], CH["eyes"]]].to(torch.float32)


# ---------------------------------------------------------------------------------------------- kinematics

# OpenPose body indices (keypoints.BODY_JOINT_NAMES)
NOSE, NECK = 0, 1
R_SHOULDER, R_ELBOW, R_WRIST, L_SHOULDER, L_ELBOW, L_WRIST = 2, 3, 4, 5, 6, 7
R_HIP, R_KNEE, R_ANKLE, L_HIP, L_KNEE, L_ANKLE = 8, 9, 10, 11, 12, 13
R_EYE, L_EYE, R_EAR, L_EAR, L_TOE, R_TOE = 14, 15, 16, 17, 18, 19

# Face features on the head sphere: (azimuth, elevation) in radians; azimuth signs are per side.
EYE_AZ, EYE_EL = 0.5, 0.15
EAR_AZ, EAR_EL, EAR_RADIUS = 1.45, 0.0, 0.92  # ears sit a little inside the head circle
NOSE_EL = -0.2
MOUTH_EL = -0.55

# Hand: fingers' knuckle spread (x side), palm-length multiplier, finger-length multiplier; phalanx fractions
FINGER_SPREAD = (0.30, 0.10, -0.10, -0.30)  # index, middle, ring, little
FINGER_KNUCKLE = (0.95, 1.0, 0.97, 0.88)
FINGER_LENGTH = (0.9, 1.0, 0.93, 0.75)
PHALANX = (0.45, 0.32, 0.23)
CURL_BEND = (1.5, 1.4, 1.0)  # per-phalanx bend at a full curl (fold towards the viewer: shortens)
THUMB_LENGTH = 0.8


def _dir(theta: torch.Tensor) -> torch.Tensor:
    """Direction angle [...] -> unit vector [...,2] (sin, cos)."""
    return torch.stack([torch.sin(theta), torch.cos(theta)], dim=-1)


@dataclass
class Skeleton:
    """Forward-kinematics result for T frames, in pixels (computed in float64, stored float32).

    joints [T,62,2]: true positions, also outside the frame; visible [T,62]: inside the frame, and for eyes
    and ears facing the viewer; pelvis, head_center, mouth_center [T,2]; head_up / head_side and torso_up /
    torso_side [T,2]: unit vectors (up; the person's left = image right when upright); yaw [T]: head yaw;
    ear_facing / eye_facing [T,2] (right, left): cos of their azimuth, > 0 facing the viewer; expression
    [T,2] (mouth, eyes); head_radius, radius (arms), leg_radius, finger_radius, palm_radius in pixels.
    """

    joints: torch.Tensor
    visible: torch.Tensor
    pelvis: torch.Tensor
    head_center: torch.Tensor
    head_up: torch.Tensor
    head_side: torch.Tensor
    torso_up: torch.Tensor
    torso_side: torch.Tensor
    yaw: torch.Tensor
    mouth_center: torch.Tensor
    ear_facing: torch.Tensor
    eye_facing: torch.Tensor
    expression: torch.Tensor
    head_radius: float
    radius: float
    leg_radius: float
    finger_radius: float
    palm_radius: float
    height: int
    width: int


def _hand(wrist: torch.Tensor, theta: torch.Tensor, side: float, curl: torch.Tensor, palm: float,
          finger: float) -> torch.Tensor:
    """21 OpenPose hand points [T,21,2]: wrist, thumb (CMC, MCP, IP, tip), then 4 points per finger."""
    pts = [wrist]
    # thumb: from near the wrist towards the outside; closing swings it across the palm
    cmc = wrist + 0.3 * palm * _dir(theta + side * 0.9)
    pts.append(cmc)
    th_dir = _dir(theta + side * (0.75 - 1.3 * curl))
    p = cmc
    for frac in (0.4, 0.33, 0.27):
        p = p + THUMB_LENGTH * finger * frac * th_dir
        pts.append(p)
    spread = 1.0 - 0.5 * curl
    for k in range(4):
        ang = theta + side * FINGER_SPREAD[k] * spread
        p = wrist + palm * FINGER_KNUCKLE[k] * _dir(ang)
        pts.append(p)
        d = _dir(ang)
        bend = torch.zeros_like(curl)
        for j in range(3):
            bend = bend + CURL_BEND[j] * curl
            p = p + (finger * FINGER_LENGTH[k] * PHALANX[j] * torch.cos(bend))[:, None] * d
            pts.append(p)
    return torch.stack(pts, dim=1)


def skeleton(identity: Identity, curves: torch.Tensor, height: int, width: int) -> Skeleton:
    """Forward kinematics: pose channels [T,NUM_CHANNELS] on ``identity`` -> Skeleton in pixels."""
    if curves.ndim != 2 or curves.shape[1] != NUM_CHANNELS:
        raise ValueError(f"expected curves [T,{NUM_CHANNELS}], got {tuple(curves.shape)}")
    q = curves.to(torch.float64)
    T = q.shape[0]
    S = identity.scale * height  # pixels per unit length

    def ch(name: str) -> torch.Tensor:
        return q[:, CH[name]]

    leg_len = (identity.thigh + identity.shin) * S
    pelvis = torch.stack([identity.center_x * width + ch("root_x") * leg_len,
                          identity.pelvis_y * height + ch("root_y") * leg_len], dim=-1)
    lean, turn = ch("lean"), ch("turn")
    up = _dir(math.pi + lean)
    side_v = _dir(lean + math.pi / 2)  # perpendicular: image right when upright (the person's left)
    neck = pelvis + identity.torso * S * up
    cos_turn = torch.cos(turn)[:, None]
    j = torch.zeros(T, NUM_JOINTS, 2, dtype=torch.float64)
    j[:, NECK] = neck
    for s, sh, hip in ((1.0, L_SHOULDER, L_HIP), (-1.0, R_SHOULDER, R_HIP)):
        j[:, sh] = neck + s * identity.shoulder_width * S * cos_turn * side_v
        j[:, hip] = pelvis + s * identity.hip_width * S * cos_turn * side_v

    # head: a sphere whose face features turn with the yaw
    head_theta = math.pi + lean + ch("head_tilt")
    head_up = _dir(head_theta)
    head_side = _dir(head_theta - math.pi / 2)
    r = identity.head_radius * S
    head_center = neck + (identity.neck_len * S + r) * head_up
    yaw = turn + ch("head_turn")

    def feature(az: float, el: float, radius: float = 1.0) -> torch.Tensor:
        return (head_center + radius * r * math.cos(el) * torch.sin(az + yaw)[:, None] * head_side
                + radius * r * math.sin(el) * head_up)

    j[:, NOSE] = feature(0.0, NOSE_EL)
    j[:, L_EYE], j[:, R_EYE] = feature(EYE_AZ, EYE_EL), feature(-EYE_AZ, EYE_EL)
    j[:, L_EAR], j[:, R_EAR] = feature(EAR_AZ, EAR_EL, EAR_RADIUS), feature(-EAR_AZ, EAR_EL, EAR_RADIUS)
    mouth_center = feature(0.0, MOUTH_EL)
    eye_facing = torch.stack([torch.cos(-EYE_AZ + yaw), torch.cos(EYE_AZ + yaw)], dim=-1)
    ear_facing = torch.stack([torch.cos(-EAR_AZ + yaw), torch.cos(EAR_AZ + yaw)], dim=-1)

    # arms and hands
    palm, finger = identity.palm * S, identity.finger * S
    for s, p, sh, el, wr, hand_start in (("l", 1.0, L_SHOULDER, L_ELBOW, L_WRIST, LEFT_HAND_START),
                                         ("r", -1.0, R_SHOULDER, R_ELBOW, R_WRIST, RIGHT_HAND_START)):
        t_ua = lean + p * ch(f"{s}_shoulder")
        j[:, el] = j[:, sh] + identity.upper_arm * S * _dir(t_ua)
        t_fa = t_ua + p * ch(f"{s}_elbow")
        j[:, wr] = j[:, el] + identity.forearm * S * _dir(t_fa)
        t_hand = t_fa + p * ch(f"{s}_wrist")
        j[:, hand_start:hand_start + 21] = _hand(j[:, wr], t_hand, p, ch(f"{s}_curl"), palm, finger)

    # legs: hanging from the hips, not leaning with the torso
    for s, p, hip, kn, an, toe in (("l", 1.0, L_HIP, L_KNEE, L_ANKLE, L_TOE), ("r", -1.0, R_HIP, R_KNEE, R_ANKLE,
                                                                               R_TOE)):
        t_th = p * ch(f"{s}_hip")
        j[:, kn] = j[:, hip] + identity.thigh * S * _dir(t_th)
        t_sh = t_th + p * ch(f"{s}_knee")
        j[:, an] = j[:, kn] + identity.shin * S * _dir(t_sh)
        j[:, toe] = j[:, an] + identity.foot * S * _dir(t_sh + p * ch(f"{s}_ankle"))

    inside = ((j[..., 0] >= -0.5) & (j[..., 0] < width - 0.5) & (j[..., 1] >= -0.5) & (j[..., 1] < height - 0.5))
    visible = inside.clone()
    visible[:, R_EYE] &= eye_facing[:, 0] > 0.2
    visible[:, L_EYE] &= eye_facing[:, 1] > 0.2
    visible[:, R_EAR] &= ear_facing[:, 0] > 0.0
    visible[:, L_EAR] &= ear_facing[:, 1] > 0.0
    radius = identity.thickness * S
    f32 = torch.float32
    return Skeleton(
        joints=j.to(f32), visible=visible, pelvis=pelvis.to(f32), head_center=head_center.to(f32),
        head_up=head_up.to(f32), head_side=head_side.to(f32), torso_up=up.to(f32), torso_side=side_v.to(f32),
        yaw=yaw.to(f32), mouth_center=mouth_center.to(f32), ear_facing=ear_facing.to(f32),
        eye_facing=eye_facing.to(f32), expression=expression_from_curves(q), head_radius=r, radius=radius,
        leg_radius=identity.leg_radius * S, finger_radius=max(0.75, 0.4 * radius),
        palm_radius=max(0.75, 0.38 * palm), height=height, width=width,
    )
