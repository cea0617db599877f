"""The joint layout used for heatmap supervision, and reading it from ComfyUI POSE_KEYPOINT dicts.

The paper supervises "the 20 body joints from DWPose along with all hand joints": J = 20 + 2 x 21 = 62.

Which 20 body joints. DWPose predicts the 133 COCO-WholeBody keypoints: 17 COCO body points, 6 foot
points, 68 face points and 2 x 21 hand points. Its annotator (and comfyui_controlnet_aux, whose POSE_KEYPOINT
ComfyUI users have) inserts a neck (the shoulders' midpoint) and reorders the body into the 18-point OpenPose
layout; the foot points follow at 18..23 (left big toe, left small toe, left heel, right big toe, right
small toe, right heel). 20 body joints = those 18 OpenPose points + the two big toes:

- the 18 points are exactly DWPose's body output as every DWPose/OpenPose tool draws and exports it;
- 18 + 6 feet would be 24 and 17 COCO points + 3 would need an invented point, so the only DWPose subset of
  size 20 that keeps the whole OpenPose body adds one point per foot;
- of the foot points, the big toe is the one that adds most: with the ankle it gives the foot's direction
  (the heel lies almost on the ankle in the image); OpenPose BODY_25 also lists the big toe first.

Layout (index: joint): 0-17 OpenPose body (nose, neck, right shoulder/elbow/wrist, left
shoulder/elbow/wrist, right hip/knee/ankle, left hip/knee/ankle, right eye, left eye, right ear, left
ear); 18 left big toe; 19 right big toe; 20-40 left hand; 41-61 right hand (21 OpenPose hand points each:
wrist, then 4 points per finger from thumb to little finger). Left/right are the person's own.

The POSE_KEYPOINT format (facts §6) holds 18 body points in "pose_keypoints_2d". The toes are read from
"foot_keypoints_2d" (6 DWPose foot points, written by several DWPose nodes) or from a 24-point (DWPose 18 +
6 feet) or 25-point (OpenPose BODY_25) "pose_keypoints_2d"; when neither is there, the two toes are marked
invisible (their heatmaps are zero and a visibility-weighted loss ignores them).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from .errors import InputError

BODY_JOINT_NAMES: tuple[str, ...] = (
    "nose",
    "neck",
    "right_shoulder",
    "right_elbow",
    "right_wrist",
    "left_shoulder",
    "left_elbow",
    "left_wrist",
    "right_hip",
    "right_knee",
    "right_ankle",
    "left_hip",
    "left_knee",
    "left_ankle",
    "right_eye",
    "left_eye",
    "right_ear",
    "left_ear",
    "left_big_toe",
    "right_big_toe",
)
HAND_JOINT_NAMES: tuple[str, ...] = ("wrist",) + tuple(
    f"{finger}_{k}" for finger in ("thumb", "index", "middle", "ring", "little") for k in range(1, 5)
)

NUM_BODY_JOINTS = len(BODY_JOINT_NAMES)  # 20
NUM_HAND_JOINTS = len(HAND_JOINT_NAMES)  # 21
LEFT_HAND_START = NUM_BODY_JOINTS  # 20
RIGHT_HAND_START = NUM_BODY_JOINTS + NUM_HAND_JOINTS  # 41
NUM_JOINTS = NUM_BODY_JOINTS + 2 * NUM_HAND_JOINTS  # 62

JOINT_NAMES: tuple[str, ...] = (
    BODY_JOINT_NAMES
    + tuple(f"left_hand_{n}" for n in HAND_JOINT_NAMES)
    + tuple(f"right_hand_{n}" for n in HAND_JOINT_NAMES)
)

# Head joints (nose, eyes, ears) and the neck, as joint indices.
NOSE, NECK = 0, 1
HEAD_JOINTS: tuple[int, ...] = (0, 14, 15, 16, 17)

# Skeleton edges as (joint, joint) index pairs into the J = 62 layout. Body: the 17 OpenPose limbs in
# OpenPose's drawing order, then ankle -> big toe for each foot.
BODY_LIMBS: tuple[tuple[int, int], ...] = (
    (1, 2),
    (1, 5),
    (2, 3),
    (3, 4),
    (5, 6),
    (6, 7),
    (1, 8),
    (8, 9),
    (9, 10),
    (1, 11),
    (11, 12),
    (12, 13),
    (1, 0),
    (0, 14),
    (14, 16),
    (0, 15),
    (15, 17),
    (13, 18),
    (10, 19),
)
# One hand's 20 bones in hand-local indices (0 = wrist), OpenPose order.
HAND_BONES: tuple[tuple[int, int], ...] = tuple(
    pair
    for base in (1, 5, 9, 13, 17)
    for pair in ((0, base), (base, base + 1), (base + 1, base + 2), (base + 2, base + 3))
)
LEFT_HAND_EDGES: tuple[tuple[int, int], ...] = tuple(
    (a + LEFT_HAND_START, b + LEFT_HAND_START) for a, b in HAND_BONES
)
RIGHT_HAND_EDGES: tuple[tuple[int, int], ...] = tuple(
    (a + RIGHT_HAND_START, b + RIGHT_HAND_START) for a, b in HAND_BONES
)
SKELETON_EDGES: tuple[tuple[int, int], ...] = BODY_LIMBS + LEFT_HAND_EDGES + RIGHT_HAND_EDGES

# Where the two toes are in the supported body/foot point lists.
_DWPOSE_FOOT_BIG_TOES = (0, 3)  # in "foot_keypoints_2d": left big toe, right big toe
_BODY24_BIG_TOES = (18, 21)  # DWPose 18 body + 6 feet in one list
# OpenPose BODY_25 -> the 18-point layout (BODY_25 adds a mid-hip at 8) and its big toes (19, 22).
_BODY25_TO_18 = (0, 1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18)
_BODY25_BIG_TOES = (19, 22)

DEFAULT_CONFIDENCE_THRESHOLD = 0.3  # DWPose's own threshold for drawing a keypoint


def _points(person: Mapping, key: str) -> list[tuple[float, float, float]]:
    """A flat [x, y, c, ...] list of the person dict -> list of (x, y, c); missing/None -> []."""
    flat = person.get(key)
    if flat is None:
        return []
    if not isinstance(flat, Sequence) or isinstance(flat, (str, bytes)):
        raise InputError(
            f"POSE_KEYPOINT '{key}' must be a flat list [x, y, confidence, ...], got {type(flat)}."
        )
    if len(flat) % 3 != 0:
        raise InputError(
            f"POSE_KEYPOINT '{key}' has {len(flat)} numbers, not a multiple of 3 (x, y, confidence per "
            "point): connect the keypoints output of a DWPose/OpenPose node."
        )
    try:
        values = [float(v) for v in flat]
    except (TypeError, ValueError):
        raise InputError(f"POSE_KEYPOINT '{key}' holds values that are not numbers.") from None
    return [(values[i], values[i + 1], values[i + 2]) for i in range(0, len(values), 3)]


def _person_joints(person: Mapping) -> list[tuple[float, float, float]]:
    """One person's dict -> 62 (x, y, c) in the module's layout, coordinates as stored in the dict."""
    missing = (0.0, 0.0, 0.0)
    body = _points(person, "pose_keypoints_2d")
    feet = _points(person, "foot_keypoints_2d")
    if len(body) == 25:
        toes = [body[i] for i in _BODY25_BIG_TOES]
        body18 = [body[i] for i in _BODY25_TO_18]
    elif len(body) in (18, 24):
        body18 = body[:18]
        toes = [body[i] for i in _BODY24_BIG_TOES] if len(body) == 24 else [missing, missing]
    elif len(body) == 0:
        body18, toes = [missing] * 18, [missing, missing]
    else:
        raise InputError(
            f"POSE_KEYPOINT 'pose_keypoints_2d' has {len(body)} points; expected 18 (OpenPose/DWPose), 24 "
            "(DWPose with feet) or 25 (OpenPose BODY_25)."
        )
    if len(feet) == 6:
        toes = [feet[i] for i in _DWPOSE_FOOT_BIG_TOES]
    elif len(feet) not in (0, 6):
        raise InputError(
            f"POSE_KEYPOINT 'foot_keypoints_2d' has {len(feet)} points; expected 6 (DWPose feet)."
        )
    hands = []
    for key in ("hand_left_keypoints_2d", "hand_right_keypoints_2d"):
        pts = _points(person, key)
        if len(pts) == 0:
            pts = [missing] * NUM_HAND_JOINTS
        elif len(pts) != NUM_HAND_JOINTS:
            raise InputError(f"POSE_KEYPOINT '{key}' has {len(pts)} points; expected {NUM_HAND_JOINTS}.")
        hands.extend(pts)
    return body18 + toes + hands


def _extent(candidate: tuple[torch.Tensor, torch.Tensor]) -> float:
    """Size of the box around a person's visible joints (area + perimeter, so thin boxes still rank)."""
    joints, vis = candidate
    n = int(vis.sum())
    if n < 2:
        return -1.0 + n
    span = joints[vis, :2].amax(dim=0) - joints[vis, :2].amin(dim=0)
    return float(span[0] * span[1]) + float(span.sum())


def keypoints_from_pose_dict(
    frame_dict: Mapping,
    width: int | None = None,
    height: int | None = None,
    *,
    person: int | None = None,
    normalized: bool | None = None,
    confidence_threshold: float = DEFAULT_CONFIDENCE_THRESHOLD,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One frame of ComfyUI POSE_KEYPOINT (facts §6) -> the J = 62 joints of one person, in pixels.

    frame_dict: {"people": [{"pose_keypoints_2d": [x, y, c] * 18 (or 24 / 25), "foot_keypoints_2d": 6
        points (optional), "hand_left_keypoints_2d": 21 points, "hand_right_keypoints_2d": 21 points, ...}],
        "canvas_width": W, "canvas_height": H}. Missing or None parts count as invisible.
    width, height: size in pixels of the image the returned coordinates refer to; None: the canvas size.
    person: index into "people"; None picks the person whose visible joints span the largest box (the main
        subject).
    normalized: whether the dict's coordinates are in [0, 1] of the canvas; None detects it (every visible
        coordinate within [0, 1] means normalised, since a person in pixel coordinates spans far more than
        one pixel).
    confidence_threshold: a joint is visible when its confidence exceeds this (0.3 as DWPose) and its
        coordinates are finite and not both <= 0 (OpenPose writes (0, 0, 0) for missing points).

    Returns xy [J,2] float32 (x, y) in pixels of a width x height image, integer coordinates at pixel
    centres (normalised input is multiplied by the size; pixel input of a canvas of another size is
    rescaled), and visible [J] bool. Invisible joints have xy = 0. No people: all invisible.
    """
    if not isinstance(frame_dict, Mapping):
        raise InputError(
            f"A POSE_KEYPOINT frame must be a dict with 'people', got {type(frame_dict).__name__}: connect "
            "the keypoints output of a DWPose/OpenPose node."
        )
    canvas_w = frame_dict.get("canvas_width")
    canvas_h = frame_dict.get("canvas_height")
    width = int(width if width is not None else canvas_w or 0)
    height = int(height if height is not None else canvas_h or 0)
    if width <= 0 or height <= 0:
        raise InputError(
            "POSE_KEYPOINT frame has no canvas_width/canvas_height and no image size was given: give the "
            "width and height of the frames the keypoints belong to."
        )

    xy = torch.zeros(NUM_JOINTS, 2, dtype=torch.float32)
    visible = torch.zeros(NUM_JOINTS, dtype=torch.bool)
    people = frame_dict.get("people") or []
    if not isinstance(people, Sequence):
        raise InputError("POSE_KEYPOINT 'people' must be a list of person dicts.")
    candidates = []
    for p in people:
        if not isinstance(p, Mapping):
            raise InputError("POSE_KEYPOINT 'people' must be a list of person dicts.")
        joints = torch.tensor(_person_joints(p), dtype=torch.float64)  # [J,3]
        vis = (
            (joints[:, 2] > confidence_threshold)
            & torch.isfinite(joints[:, :2]).all(dim=1)
            & ~((joints[:, 0] <= 0) & (joints[:, 1] <= 0))
        )
        candidates.append((joints, vis))
    if not candidates:
        return xy, visible
    if person is not None:
        if not 0 <= person < len(candidates):
            raise InputError(
                f"Person index {person} is out of range: this frame has {len(candidates)} people."
            )
        joints, vis = candidates[person]
    else:
        joints, vis = max(candidates, key=_extent)

    pts = joints[:, :2]
    if normalized is None:
        all_vis = [c[0][c[1], :2] for c in candidates]
        coords = torch.cat(all_vis) if all_vis else pts[:0]
        normalized = bool(coords.numel() > 0 and coords.max() <= 1.0 + 1e-3 and coords.min() >= -1e-3)
    if normalized:
        scale = torch.tensor([width, height], dtype=torch.float64)
        pts = pts * scale
    elif canvas_w and canvas_h:
        # Pixel coordinates of another canvas size: integer coordinates are pixel centres.
        scale = torch.tensor([width / float(canvas_w), height / float(canvas_h)], dtype=torch.float64)
        pts = (pts + 0.5) * scale - 0.5
    xy = torch.where(vis[:, None], pts, torch.zeros_like(pts)).to(torch.float32)
    return xy, vis


def keypoints_from_pose_frames(
    frames: Sequence[Mapping] | Mapping,
    width: int | None = None,
    height: int | None = None,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A POSE_KEYPOINT list (one dict per frame) -> xy [T,J,2] float32 pixels and visible [T,J] bool.

    Arguments as keypoints_from_pose_dict, applied to every frame; a single dict is one frame.
    """
    if isinstance(frames, Mapping):
        frames = [frames]
    if len(frames) == 0:
        raise InputError("POSE_KEYPOINT is empty (no frames): run the pose node on at least one frame.")
    out = [keypoints_from_pose_dict(f, width, height, **kwargs) for f in frames]
    return torch.stack([o[0] for o in out]), torch.stack([o[1] for o in out])


FACE_BOX_SCALE = 1.8  # face box side / the head joints' spread: ear to ear is about the face's width


def face_box_from_keypoints(
    xy: torch.Tensor,
    visible: torch.Tensor,
    *,
    scale: float = FACE_BOX_SCALE,
    image_size: tuple[int, int] | None = None,
) -> torch.Tensor | None:
    """A square face box from the head joints (nose, eyes, ears), or None when the face is not visible.

    xy: [J,2] (x, y) pixels, visible: [J] bool, in the module's J = 62 layout.
    scale: box side as a multiple of the head joints' spread (the larger of their x and y extent; ear to
        ear is about the face's width, so 1.8 covers forehead and chin).
    image_size: (height, width) to clip the box to; None: no clipping.

    The box is centred on the nose when visible, else on the mean of the visible head joints. With a
    single visible head joint the side comes from the head-to-neck distance (side = 1.2 x that distance),
    so a face needs two head joints, or one head joint and the neck. Returns [4] float32 (x0, y0, x1, y1)
    in pixels, or None when there is too little to place the box or it is empty after clipping.
    """
    if xy.shape != (NUM_JOINTS, 2) or visible.shape != (NUM_JOINTS,):
        raise ValueError(
            f"expected xy [{NUM_JOINTS},2] and visible [{NUM_JOINTS}], got {xy.shape}, {visible.shape}"
        )
    box, ok = _face_boxes(xy[None], visible[None], scale, image_size)
    return box[0] if bool(ok[0]) else None


def _face_boxes(joints: torch.Tensor, visible: torch.Tensor, scale: float,
                image_size: tuple[int, int] | None) -> tuple[torch.Tensor, torch.Tensor]:
    """face_box_from_keypoints over frames: (boxes [T,4] float32, found [T] bool; a box where found is
    False is meaningless)."""
    T = joints.shape[0]
    head = torch.tensor(HEAD_JOINTS)
    pts = joints[:, head].to(torch.float32)  # [T,5,2]
    hv = visible[:, head].bool()
    n = hv.sum(dim=1)
    mean = (pts * hv[..., None]).sum(dim=1) / n.clamp(min=1)[:, None]
    centre = torch.where(visible[:, NOSE, None].bool(), joints[:, NOSE].to(torch.float32), mean)
    big = torch.finfo(torch.float32).max
    hi = torch.where(hv[..., None], pts, torch.full_like(pts, -big)).amax(dim=1)
    lo = torch.where(hv[..., None], pts, torch.full_like(pts, big)).amin(dim=1)
    spread = torch.where(n >= 2, (hi - lo).amax(dim=-1), torch.zeros(T))
    side = scale * spread
    neck_dist = 1.2 * torch.linalg.vector_norm(joints[:, NECK].to(torch.float32) - centre, dim=-1)
    side = torch.where(visible[:, NECK].bool(), torch.maximum(side, neck_dist), side)
    half = side[:, None] / 2
    box = torch.cat([centre - half, centre + half], dim=-1)
    ok = (n > 0) & torch.isfinite(side) & (side >= 1.0)
    if image_size is not None:
        height, width = image_size
        box = torch.minimum(box.clamp(min=0), torch.tensor([width, height, width, height], dtype=torch.float32))
        ok &= (box[:, 2] - box[:, 0] >= 1.0) & (box[:, 3] - box[:, 1] >= 1.0)
    return box, ok


def fallback_face_boxes(num_frames: int, height: int, width: int) -> torch.Tensor:
    """Face boxes when no keypoints are given: a square of side 0.35*min(H,W), centred horizontally,
    its top at 5% of the height (where a standing, centred character's head is). [N,4] x0,y0,x1,y1 pixels."""
    side = 0.35 * min(height, width)
    x0, y0 = (width - side) / 2, 0.05 * height
    return torch.tensor([x0, y0, x0 + side, y0 + side], dtype=torch.float32).expand(num_frames, 4).clone()


def face_boxes_from_joints(joints: torch.Tensor, visible: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The face boxes the expression encoder crops, in training data and at inference alike.

    joints: [T,62,2] (x, y) pixels; visible: [T,62] bool. Returns [T,4] float32 (x0, y0, x1, y1 pixels):
    face_box_from_keypoints (default scale, clipped to the frame) for every frame. A frame whose face is not
    visible takes the previous frame's box; frames before the first visible face take the first visible
    face's box (the face is most likely near where it first shows); a clip without any visible face gets
    fallback_face_boxes."""
    box, ok = _face_boxes(joints, visible, FACE_BOX_SCALE, (height, width))
    boxes = fallback_face_boxes(joints.shape[0], height, width)
    if not bool(ok.any()):
        return boxes
    t = torch.arange(joints.shape[0])
    last = torch.cummax(torch.where(ok, t, torch.full_like(t, -1)), dim=0).values
    first = int(t[ok][0])
    src = torch.where(last >= 0, last, torch.full_like(last, first))
    return box[src]
