"""Retargeted joints out: as ComfyUI POSE_KEYPOINT (the DWPose/OpenPose layout pose nodes exchange) and as a
rendered skeleton video in the style DWPose draws, e.g. for a pose-conditioned video model (Wan Animate's
pose_video).

Joints come in the J = 62 layout of keypoints.py, whose indices 0-17 are already the OpenPose body-18 order
and whose hands are the 21 OpenPose hand points each; the project has no face points.

The POSE_KEYPOINT frame written per output frame, as comfyui_controlnet_aux's DWPose node writes it:
    {"people": [{"pose_keypoints_2d": [x, y, c] * 18,
                 "face_keypoints_2d": [],
                 "hand_left_keypoints_2d": [x, y, c] * 21 (or [] without hands),
                 "hand_right_keypoints_2d": [x, y, c] * 21 (or [] without hands),
                 "foot_keypoints_2d": [x, y, c] * 6}],
     "canvas_width": W, "canvas_height": H}
x, y are normalised to [0, 1] of the canvas (x / W, y / H with the pixel coordinates of keypoints.py,
integer = pixel centre), as the ControlNet DWPose annotator writes them (comfyui_controlnet_aux's current
DWPose Estimator writes pixels of its input image instead; keypoints_from_pose_dict reads both); a visible
point has c = 1.0 and a hidden one is [0.0, 0.0, 0.0], because DWPose's own readers drop every point with
c < 1. "foot_keypoints_2d" holds the 6 DWPose foot points (left big toe, left small toe, left heel, right big
toe, right small toe, right heel) of which the project has the two big toes; the others are written hidden.
keypoints.keypoints_from_pose_frames reads these frames back to the same joints.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from .errors import InputError
from .heatmaps import joint_colors
from .keypoints import (
    DEFAULT_CONFIDENCE_THRESHOLD,
    HAND_BONES,
    LEFT_HAND_START,
    NUM_BODY_JOINTS,
    NUM_HAND_JOINTS,
    NUM_JOINTS,
    RIGHT_HAND_START,
    keypoints_from_pose_frames,
)

OPENPOSE_BODY_JOINTS = 18
# OpenPose's 17 limbs (joint index pairs in the body-18 order), in the order OpenPose draws and colours them.
OPENPOSE_LIMBS: tuple[tuple[int, int], ...] = (
    (1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11), (11, 12), (12, 13),
    (1, 0), (0, 14), (14, 16), (0, 15), (15, 17),
)
# OpenPose's 18 body colours (RGB, 0-255): colour i for joint i and for limb i.
OPENPOSE_COLORS: tuple[tuple[int, int, int], ...] = (
    (255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0), (0, 255, 0),
    (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255), (0, 0, 255), (85, 0, 255),
    (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85),
)
# Limbs are drawn at this fraction of their colour's brightness, joints at full brightness, as OpenPose does.
LIMB_BRIGHTNESS = 0.6
HAND_POINT_COLOR = (0, 0, 255)
# Stroke sizes in pixels at a 512-pixel canvas (DWPose's detect resolution): limb half-width 4, joint radius
# 4, hand bone half-width 1, hand point radius 4; other canvases scale them with their longer side.
REFERENCE_SIDE = 512
LIMB_HALF_WIDTH, JOINT_RADIUS, HAND_BONE_HALF_WIDTH, HAND_POINT_RADIUS = 4.0, 4.0, 1.0, 4.0
# Index of the left and right big toes in DWPose's 6 foot points.
_FOOT_POINTS = 6
_FOOT_BIG_TOES = {0: NUM_BODY_JOINTS - 2, 3: NUM_BODY_JOINTS - 1}


def visible_joints(confidence: torch.Tensor, threshold: float = DEFAULT_CONFIDENCE_THRESHOLD) -> torch.Tensor:
    """[T,J] confidences -> [T,J] bool: above ``threshold`` (0.3, DWPose's drawing threshold)."""
    return confidence > threshold


def _check(xy: torch.Tensor, visible: torch.Tensor, width: int, height: int) -> None:
    if xy.ndim != 3 or xy.shape[1:] != (NUM_JOINTS, 2) or visible.shape != xy.shape[:2]:
        raise InputError(f"joints have shape {tuple(xy.shape)} with visibility {tuple(visible.shape)}; expected "
                         f"[T,{NUM_JOINTS},2] and [T,{NUM_JOINTS}] in the layout of keypoints.py")
    if width < 1 or height < 1:
        raise InputError(f"the canvas is {width}x{height}; give a width and height of at least one pixel")


def _flat(xy: torch.Tensor, visible: torch.Tensor, width: int, height: int) -> list[float]:
    """[N,2] pixels + [N] bool -> [x/W, y/H, 1.0, ...] with hidden points as 0, 0, 0."""
    out: list[float] = []
    for (x, y), v in zip(xy.tolist(), visible.tolist(), strict=True):
        out += [x / width, y / height, 1.0] if v else [0.0, 0.0, 0.0]
    return out


def pose_keypoint_frames(xy: torch.Tensor, visible: torch.Tensor, width: int, height: int,
                         hands: bool = True) -> list[dict]:
    """Joints -> POSE_KEYPOINT, one frame dict per frame, one person (format in the module docstring).

    xy: [T,J,2] float (x, y) pixels of a width x height canvas (integer = pixel centre), J = 62 layout of
        keypoints.py; visible: [T,J] bool (e.g. visible_joints). Joints outside the canvas (beyond its outer
        half pixel) count as hidden, since a point outside [0, 1] is no point of the canvas to the tools that
        read the format.
    hands: False writes empty hand lists (the body only).
    """
    _check(xy, visible, width, height)
    xy = xy.detach().to("cpu", torch.float64)
    visible = visible.detach().cpu().bool() & torch.isfinite(xy).all(-1)
    inside = (xy[..., 0] >= -0.5) & (xy[..., 0] <= width - 0.5) & (xy[..., 1] >= -0.5) & (xy[..., 1] <= height - 0.5)
    visible = visible & inside
    # Within the canvas's outer half pixel: onto the edge pixel, so that every written coordinate is in [0, 1)
    # and readers that tell normalised from pixel coordinates by their range see normalised ones.
    xy = torch.stack([xy[..., 0].clamp(0, width - 1), xy[..., 1].clamp(0, height - 1)], dim=-1)
    frames = []
    for t in range(xy.shape[0]):
        p, v = xy[t], visible[t]
        foot_xy = torch.zeros(_FOOT_POINTS, 2, dtype=torch.float64)
        foot_v = torch.zeros(_FOOT_POINTS, dtype=torch.bool)
        for i, joint in _FOOT_BIG_TOES.items():
            foot_xy[i], foot_v[i] = p[joint], v[joint]
        left = slice(LEFT_HAND_START, LEFT_HAND_START + NUM_HAND_JOINTS)
        right = slice(RIGHT_HAND_START, RIGHT_HAND_START + NUM_HAND_JOINTS)
        person = {
            "pose_keypoints_2d": _flat(p[:OPENPOSE_BODY_JOINTS], v[:OPENPOSE_BODY_JOINTS], width, height),
            "face_keypoints_2d": [],
            "hand_left_keypoints_2d": _flat(p[left], v[left], width, height) if hands else [],
            "hand_right_keypoints_2d": _flat(p[right], v[right], width, height) if hands else [],
            "foot_keypoints_2d": _flat(foot_xy, foot_v, width, height),
        }
        frames.append({"people": [person], "canvas_width": int(width), "canvas_height": int(height)})
    return frames


def _paint_segment(canvas: torch.Tensor, a: torch.Tensor, b: torch.Tensor, half_width: float,
                   color: torch.Tensor) -> None:
    """Paints, in place, every pixel of canvas [H,W,3] whose centre lies within half_width of segment a-b
    (pixel coordinates; a == b paints a disc), inside the segment's bounding box only."""
    h, w = canvas.shape[:2]
    x0 = max(int(torch.floor(torch.minimum(a[0], b[0]) - half_width)), 0)
    x1 = min(int(torch.ceil(torch.maximum(a[0], b[0]) + half_width)) + 1, w)
    y0 = max(int(torch.floor(torch.minimum(a[1], b[1]) - half_width)), 0)
    y1 = min(int(torch.ceil(torch.maximum(a[1], b[1]) + half_width)) + 1, h)
    if x0 >= x1 or y0 >= y1:
        return
    ys, xs = torch.meshgrid(torch.arange(y0, y1, dtype=torch.float32), torch.arange(x0, x1, dtype=torch.float32),
                            indexing="ij")
    px = torch.stack([xs, ys], dim=-1)
    d = b - a
    along = ((px - a) @ d / (d @ d).clamp(min=1e-12)).clamp(0, 1)
    dist = torch.linalg.vector_norm(px - (a + along[..., None] * d), dim=-1)
    mask = dist <= half_width
    region = canvas[y0:y1, x0:x1]
    region[mask] = color


def render_pose_frames(xy: torch.Tensor, visible: torch.Tensor, width: int, height: int,
                       hands: bool = True) -> torch.Tensor:
    """Joints -> skeleton pictures [T,H,W,3] float32 in [0,1] (ComfyUI IMAGE), black background, drawn as
    DWPose draws its POSE_KEYPOINT: the 17 OpenPose limbs as sticks at 60% of their colour, then the 18 body
    joints as discs in OpenPose's colours, then each hand's 20 bones in spread hues and its 21 points in blue.
    A limb is drawn when both its joints are visible; the big toes, which OpenPose's picture does not have,
    are not drawn. Stroke sizes follow the canvas (REFERENCE_SIDE).

    xy: [T,J,2] float pixels of the width x height canvas (integer = pixel centre); visible: [T,J] bool;
    hands: False draws the body only.
    """
    _check(xy, visible, width, height)
    xy = xy.detach().to("cpu", torch.float32)
    visible = visible.detach().cpu().bool() & torch.isfinite(xy).all(-1)
    scale = max(width, height) / REFERENCE_SIDE
    limb_w, joint_r = max(LIMB_HALF_WIDTH * scale, 1.0), max(JOINT_RADIUS * scale, 1.0)
    bone_w, point_r = max(HAND_BONE_HALF_WIDTH * scale, 0.5), max(HAND_POINT_RADIUS * scale, 1.0)
    body_colors = torch.tensor(OPENPOSE_COLORS, dtype=torch.float32) / 255
    # OpenPose's hand bone colours are hues spread evenly over the 20 bones at full saturation.
    hand_colors, point_color = joint_colors(len(HAND_BONES)), torch.tensor(HAND_POINT_COLOR, dtype=torch.float32) / 255
    out = torch.zeros(xy.shape[0], height, width, 3)
    for t in range(xy.shape[0]):
        canvas, p, v = out[t], xy[t], visible[t]
        for i, (a, b) in enumerate(OPENPOSE_LIMBS):
            if v[a] and v[b]:
                _paint_segment(canvas, p[a], p[b], limb_w, body_colors[i] * LIMB_BRIGHTNESS)
        for j in range(OPENPOSE_BODY_JOINTS):
            if v[j]:
                _paint_segment(canvas, p[j], p[j], joint_r, body_colors[j])
        if not hands:
            continue
        for start in (LEFT_HAND_START, RIGHT_HAND_START):
            for k, (a, b) in enumerate(HAND_BONES):
                if v[start + a] and v[start + b]:
                    _paint_segment(canvas, p[start + a], p[start + b], bone_w, hand_colors[k])
            for j in range(start, start + NUM_HAND_JOINTS):
                if v[j]:
                    _paint_segment(canvas, p[j], p[j], point_r, point_color)
    return out


def _json_number(value):
    """json.dump's fallback for the numpy scalars a pose node may leave in its dicts."""
    try:
        return float(value)
    except (TypeError, ValueError):
        raise TypeError(f"a value of type {type(value).__name__} in POSE_KEYPOINT is not a number") from None


def save_pose_keypoint_json(frames: Sequence[Mapping] | Mapping, path: str | Path) -> tuple[int, int]:
    """Write POSE_KEYPOINT (one dict per frame, as a DWPose node outputs it, or one dict for one frame) to
    ``path`` as the JSON list data.VideoFolder reads beside a clip (``<clip>.json``): the frames as they
    are, so pixel or normalised coordinates, face and foot points all stay what the pose node made.

    Written under a temporary name and renamed, so a file that exists is whole. Returns (frames, frames with a
    person). Raises InputError when the frames do not parse as POSE_KEYPOINT or show no person at all (such a
    clip would only be skipped by VideoFolder).
    """
    if isinstance(frames, Mapping):
        frames = [frames]
    frames = list(frames)
    if not all(isinstance(f, Mapping) for f in frames):
        raise InputError("POSE_KEYPOINT must be a list of per-frame dicts {'people': [...], 'canvas_width', "
                         "'canvas_height'}, as a DWPose node outputs it")
    # Parse exactly as VideoFolder will; the canvas of each frame is its own, so no size is needed here.
    _xy, visible = keypoints_from_pose_frames(frames)
    with_person = int(visible.any(dim=1).sum())
    if with_person == 0:
        raise InputError(f"no person in any of the {len(frames)} frames (no keypoint above the confidence "
                         "threshold): check that the pose node saw the video, or leave this clip out")
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump([dict(frame) for frame in frames], f, default=_json_number)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return len(frames), with_person


# COCO-WholeBody (133 points: body 0-16, feet 17-22, face 23-90, left hand 91-111, right hand 112-132), the
# layout DWPose / RTMW models predict and the registry package rtmlib's Wholebody returns by default. Its COCO-17
# body in OpenPose's 18-point order; None is the neck, which COCO lacks: the mean of both shoulders, as DWPose
# and rtmlib compute it when they convert.
OPENPOSE_FROM_COCO = (0, None, 6, 8, 10, 5, 7, 9, 12, 14, 16, 11, 13, 15, 2, 1, 4, 3)
_WHOLEBODY_PARTS = {"foot_keypoints_2d": (17, 23), "face_keypoints_2d": (23, 91),
                    "hand_left_keypoints_2d": (91, 112), "hand_right_keypoints_2d": (112, 133)}


def pose_frame_from_wholebody(keypoints, scores, width: int, height: int,
                              threshold: float = DEFAULT_CONFIDENCE_THRESHOLD) -> dict:
    """One frame of COCO-WholeBody predictions -> one POSE_KEYPOINT frame dict as comfyui_controlnet_aux's DWPose
    Estimator writes it (pixel coordinates, c = 1.0 for a kept point, [0, 0, 0] for one under ``threshold``, a
    part with no kept point None), plus the 6 DWPose foot points, for a pose package outside ComfyUI:

        keypoints, scores = rtmlib.Wholebody(mode="balanced")(frame_bgr)   # [N,133,2] pixels, [N,133]
        frames.append(pose_frame_from_wholebody(keypoints, scores, width, height))

    keypoints: [N,133,2] (x, y) pixels of a width x height frame, one row per person; scores: [N,133].
    """
    kp = torch.as_tensor(keypoints, dtype=torch.float64)
    sc = torch.as_tensor(scores, dtype=torch.float64)
    if kp.numel() == 0:  # no person found in this frame
        return {"people": [], "canvas_width": int(width), "canvas_height": int(height)}
    if kp.shape[-2:] != (133, 2) or sc.shape[-1] != 133:
        raise InputError(f"keypoints {tuple(kp.shape)} and scores {tuple(sc.shape)} are not COCO-WholeBody "
                         "[N,133,2] and [N,133] (rtmlib's Wholebody with to_openpose=False, its default)")
    kp, sc = kp.reshape(-1, 133, 2), sc.reshape(-1, 133)
    if kp.shape[0] != sc.shape[0]:
        raise InputError(f"{kp.shape[0]} people in keypoints but {sc.shape[0]} in scores")

    def flat(points: torch.Tensor, conf: torch.Tensor) -> list[float] | None:
        keep = conf >= threshold
        if not bool(keep.any()):
            return None
        out: list[float] = []
        for (x, y), k in zip(points.tolist(), keep.tolist(), strict=True):
            out += [float(x), float(y), 1.0] if k else [0.0, 0.0, 0.0]
        return out

    people = []
    for p, c in zip(kp, sc, strict=True):
        neck = (p[5] + p[6]) / 2
        neck_c = torch.minimum(c[5], c[6])  # the neck is as sure as the less sure shoulder
        body = torch.stack([neck if i is None else p[i] for i in OPENPOSE_FROM_COCO])
        body_c = torch.stack([neck_c if i is None else c[i] for i in OPENPOSE_FROM_COCO])
        person = {"pose_keypoints_2d": flat(body, body_c) or [0.0] * (3 * OPENPOSE_BODY_JOINTS)}
        for key, (a, b) in _WHOLEBODY_PARTS.items():
            person[key] = flat(p[a:b], c[a:b])
        people.append(person)
    return {"people": people, "canvas_width": int(width), "canvas_height": int(height)}
