"""VideoFolder: real videos with per-clip DWPose keypoints, as self-reenactment samples.

A dataset folder holds clips (``*.mp4``, ``*.mov``, ``*.webm``, ``*.mkv``, ``*.avi``, ``*.m4v``) and beside
each one ``<clip>.json``: the DWPose / POSE_KEYPOINT keypoints of every frame of the clip (facts §6), either
a list of per-frame dicts ``{"people": [...], "canvas_width": W, "canvas_height": H}`` or a dict whose
"frames" entry is that list. Coordinates may be pixels or normalised (keypoints.keypoints_from_pose_dict
detects which). The pack's Save Pose Keypoints node writes such a file from a DWPose node in ComfyUI, and
pose_export.pose_frame_from_wholebody makes the frames from a registry pose package's COCO-WholeBody output
(docs/training.md, "Training on your own videos").

Bad clips never stop a run: a clip that cannot be opened or decoded, has no or unreadable keypoints, no
person, or fewer frames than one sample needs is skipped; ``dataset.skipped`` maps its path to the reason.
Clips are checked when the dataset is built (the first frame is decoded, the keypoints are parsed); a clip
whose frames fail to decode later is skipped then (recorded in ``skipped`` of the process that read it)
and the next readable sample is returned instead.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset

from ..errors import IMAnimationError, InputError
from ..keypoints import DEFAULT_CONFIDENCE_THRESHOLD, face_boxes_from_joints, keypoints_from_pose_frames
from ..video import probe_video, read_video
from .pairs import as_size

VIDEO_EXTENSIONS = (".mp4", ".mov", ".webm", ".mkv", ".avi", ".m4v")


@dataclass
class _Clip:
    path: str
    height: int  # source frame size
    width: int
    frames: int  # usable frames: covered by both the video and the keypoints
    joints: torch.Tensor  # [frames,62,2] float32, source pixels
    visible: torch.Tensor  # [frames,62] bool


def _load_keypoint_frames(path: Path) -> list:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"keypoints file {path.name} is not readable JSON ({exc})") from None
    if isinstance(data, dict) and "frames" in data:
        data = data["frames"]
    if not isinstance(data, list) or not data:
        raise InputError(
            f"keypoints file {path.name} must hold a non-empty list of per-frame POSE_KEYPOINT dicts (or a dict "
            "with such a list under 'frames')"
        )
    return data


class VideoFolder(Dataset):
    """Self-reenactment samples from a folder of clips with DWPose keypoint JSON files.

    root: the folder (searched recursively when recursive=True). frames: T frames per sample, taken every
    ``stride``-th source frame; each clip gives its non-overlapping windows of (T - 1) * stride + 1 source
    frames. size: int or (height, width) of the returned frames, or None for the source size (then clips of
    different sizes cannot share a batch). fit: "pad" scales a frame to fit inside size keeping its aspect
    ratio and pads with black; "stretch" resizes to size. confidence_threshold: a keypoint is visible above
    it (DWPose's 0.3).

    Items have the keys of SyntheticPairs: driving / target = the window's frames (the same tensor),
    identity = its first frame; *_joints in pixels of the returned frames (0 where not visible);
    *_face_boxes from the head keypoints (keypoints.face_boxes_from_joints, the rule inference uses too);
    expression [T,2] is NaN (not known for real videos).

    Raises InputError when root is not a folder, or when no clip in it is usable (with the reasons).
    """

    def __init__(self, root, frames: int = 16, size=64, stride: int = 1, *, fit: str = "pad",
                 recursive: bool = False, confidence_threshold: float = DEFAULT_CONFIDENCE_THRESHOLD):
        if frames < 1 or stride < 1:
            raise ValueError(f"need frames >= 1 and stride >= 1, got {frames}, {stride}")
        if fit not in ("pad", "stretch"):
            raise ValueError(f"fit must be 'pad' or 'stretch', got {fit!r}")
        self.root = Path(root)
        if not self.root.is_dir():
            raise InputError(f"Dataset folder '{self.root}' does not exist or is not a folder.")
        self.frames, self.stride, self.fit = int(frames), int(stride), fit
        self.size = None if size is None else as_size(size)
        self.confidence_threshold = confidence_threshold
        self.skipped: dict[str, str] = {}
        self.clips: list[_Clip] = []
        self.items: list[tuple[int, int]] = []  # (clip index, first source frame)
        pattern = "**/*" if recursive else "*"
        paths = sorted(p for p in self.root.glob(pattern) if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS)
        span = (self.frames - 1) * self.stride + 1
        for path in paths:
            try:
                clip = self._check(path, span)
            except Exception as exc:  # noqa: BLE001 - a bad clip is skipped with its reason, never fatal
                self.skipped[str(path)] = str(exc) if isinstance(exc, IMAnimationError) else repr(exc)
                continue
            for start in range(0, clip.frames - span + 1, span):
                self.items.append((len(self.clips), start))
            self.clips.append(clip)
        self._bad: set[int] = set()
        if not self.items:
            reasons = "; ".join(f"{Path(p).name}: {r}" for p, r in self.skipped.items()) or "no video files"
            raise InputError(f"Dataset folder '{self.root}' has no usable clip ({reasons}).")

    def _check(self, path: Path, span: int) -> _Clip:
        json_path = path.with_suffix(".json")
        if not json_path.is_file():
            raise InputError(f"no keypoints file {json_path.name} beside the clip")
        kp_frames = _load_keypoint_frames(json_path)
        count, _fps, height, width = probe_video(path)
        usable = min(count, len(kp_frames))
        if usable < span:
            raise InputError(
                f"too short: {usable} frames with keypoints (video {count}, keypoints {len(kp_frames)}), one sample "
                f"needs {span}"
            )
        joints, visible = keypoints_from_pose_frames(
            kp_frames[:usable], width, height, confidence_threshold=self.confidence_threshold
        )
        if not bool(visible.any()):
            raise InputError("no person in the keypoints (no joint above the confidence threshold)")
        return _Clip(str(path), height, width, usable, joints, visible)

    def __len__(self) -> int:
        return len(self.items)

    def describe(self, index: int) -> tuple[str, int]:
        """(clip path, first source frame) of item index."""
        clip, start = self.items[index]
        return self.clips[clip].path, start

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        n = len(self.items)
        for k in range(n):
            ci, start = self.items[(index + k) % n]
            if ci in self._bad:
                continue
            try:
                return self._load(self.clips[ci], start)
            except (IMAnimationError, RuntimeError, OSError, ValueError) as exc:
                self._bad.add(ci)
                self.skipped[self.clips[ci].path] = f"decoding failed: {exc}"
        raise InputError(f"No clip of '{self.root}' could be decoded ({len(self.skipped)} skipped).")

    def _load(self, clip: _Clip, start: int) -> dict[str, torch.Tensor]:
        T = self.frames
        if self.size is None:
            out_h, out_w = clip.height, clip.width
        else:
            out_h, out_w = self.size
        if self.fit == "pad":
            k = min(out_h / clip.height, out_w / clip.width)
            rh, rw = max(1, round(clip.height * k)), max(1, round(clip.width * k))
        else:
            rh, rw = out_h, out_w
        oy, ox = (out_h - rh) // 2, (out_w - rw) // 2
        size = None if (rh, rw) == (clip.height, clip.width) else (rh, rw)
        video = read_video(clip.path, stride=self.stride, max_frames=T, start=start, size=size)
        if len(video) != T:
            raise InputError(f"got {len(video)} frames from '{clip.path}', expected {T}")
        if (rh, rw) == (out_h, out_w):
            frames = video.frames
        else:
            frames = torch.zeros(T, out_h, out_w, 3)
            frames[:, oy:oy + rh, ox:ox + rw] = video.frames
        idx = video.frame_indices
        scale = torch.tensor([rw / clip.width, rh / clip.height])
        xy = (clip.joints[idx] + 0.5) * scale - 0.5 + torch.tensor([float(ox), float(oy)])
        vis = clip.visible[idx] & (xy[..., 0] >= -0.5) & (xy[..., 0] < out_w - 0.5)
        vis &= (xy[..., 1] >= -0.5) & (xy[..., 1] < out_h - 0.5)
        xy = torch.where(vis[..., None], xy, torch.zeros_like(xy)).to(torch.float32)
        boxes = face_boxes_from_joints(xy, vis, out_h, out_w)
        return {
            "driving": frames, "driving_joints": xy, "driving_visible": vis, "driving_face_boxes": boxes,
            "identity": frames[0], "identity_joints": xy[0], "identity_visible": vis[0],
            "target": frames, "target_joints": xy, "target_visible": vis, "target_face_boxes": boxes,
            "expression": torch.full((T, 2), float("nan")),
        }
