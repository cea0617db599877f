"""im_animation_core.data.VideoFolder: real clips with DWPose keypoint JSON, on a folder the tests write."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from im_animation_core.data import PAIR_KEYS, VideoFolder, collate_pairs
from im_animation_core.errors import InputError
from im_animation_core.heatmaps import heatmap_argmax, render_heatmaps
from im_animation_core.keypoints import LEFT_HAND_START, NUM_JOINTS, RIGHT_HAND_START
from im_animation_core.synthetic import Identity, Motion, render_sample

av = pytest.importorskip("av")
pytest.importorskip("decord")

VH, VW, VN = 48, 80, 10


def _encode(path: Path, frames: torch.Tensor) -> None:
    arr = (frames.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=24)
        stream.height, stream.width, stream.pix_fmt = VH, VW, "yuv420p"
        stream.options = {"qp": "0", "preset": "ultrafast"}
        for img in arr:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")))
        container.mux(stream.encode())


def _pose_frames(joints: torch.Tensor, visible: torch.Tensor) -> list[dict]:
    """Joints [T,62,2] -> POSE_KEYPOINT frames (18 body points, DWPose feet, both hands) in pixels."""
    def flat(idx, t):
        return [v for i in idx for v in (float(joints[t, i, 0]), float(joints[t, i, 1]), float(visible[t, i]))]

    foot = [18, 0, 0, 19, 0, 0]  # DWPose foot order: left big toe, 2 others, right big toe, 2 others
    out = []
    for t in range(joints.shape[0]):
        feet = flat(foot, t)
        for k in (1, 2, 4, 5):  # the other foot points: not visible
            feet[3 * k + 2] = 0.0
        out.append({"people": [{
            "pose_keypoints_2d": flat(range(18), t), "foot_keypoints_2d": feet,
            "hand_left_keypoints_2d": flat(range(LEFT_HAND_START, RIGHT_HAND_START), t),
            "hand_right_keypoints_2d": flat(range(RIGHT_HAND_START, NUM_JOINTS), t),
        }], "canvas_width": VW, "canvas_height": VH})
    return out


@pytest.fixture(scope="module")
def video_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("clips")
    clip = render_sample(Identity(center_x=0.5, scale=0.9), Motion(period=10), VN, VH, VW)
    _encode(root / "good.mp4", clip.frames)
    (root / "good.json").write_text(json.dumps(_pose_frames(clip.joints, clip.visible)))
    (root / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    (root / "corrupt.json").write_text(json.dumps(_pose_frames(clip.joints, clip.visible)))
    _encode(root / "no_json.mp4", clip.frames)
    (root / "notes.txt").write_text("not a clip")
    return root, clip


def test_video_folder_skips_bad_clips(video_folder):
    root, clip = video_folder
    ds = VideoFolder(root, frames=4, size=(VH, VW), stride=2)
    assert len(ds.skipped) == 2
    assert set(map(lambda p: Path(p).name, ds.skipped)) == {"corrupt.mp4", "no_json.mp4"}
    assert "keypoints" in ds.skipped[str(root / "no_json.mp4")]
    assert len(ds) == 1  # 10 frames, windows of (4 - 1) * 2 + 1 = 7 source frames
    s = ds[0]
    assert set(s) == set(PAIR_KEYS)
    assert s["driving"].shape == (4, VH, VW, 3) and s["identity"].shape == (VH, VW, 3)
    idx = torch.arange(0, 8, 2)
    assert float((s["driving"] - clip.frames[idx]).abs().mean()) < 0.02  # yuv420p: chroma blurs at edges
    torch.testing.assert_close(s["driving_joints"], torch.where(clip.visible[idx, :, None], clip.joints[idx], 0.0),
                               atol=1e-3, rtol=0)
    assert torch.equal(s["driving_visible"], clip.visible[idx])
    assert torch.equal(s["identity"], s["driving"][0]) and torch.equal(s["target"], s["driving"])
    assert bool(s["expression"].isnan().all())
    batch = collate_pairs([s, s])
    assert batch["target_joints"].shape == (2, 4, NUM_JOINTS, 2)


def test_video_folder_resizes_and_pads_joints(video_folder):
    root, clip = video_folder
    ds = VideoFolder(root, frames=3, size=64, stride=1)  # 48x80 -> 38x64 inside 64x64 (pad 13 rows on top)
    assert len(ds) == 3
    s = ds[1]
    rh = round(VH * 64 / VW)  # 38 rows
    expect = (clip.joints[3:6] + 0.5) * torch.tensor([64 / VW, rh / VH]) - 0.5 + torch.tensor([0.0, (64 - rh) // 2])
    vis = s["driving_visible"]
    torch.testing.assert_close(s["driving_joints"][vis], expect[vis], atol=1e-3, rtol=0)
    assert float(s["driving"][:, :10].max()) == 0.0  # black padding above the frame
    # a heatmap at a joint peaks on the figure (not on the black padding)
    hm = render_heatmaps(s["driving_joints"], vis, (64, 64))
    peak, _ = heatmap_argmax(hm, subpixel="none")
    ys, xs = peak[vis][:, 1].long(), peak[vis][:, 0].long()
    t = torch.nonzero(vis, as_tuple=True)[0]
    assert float(s["driving"][t, ys, xs].sum(-1).min()) > 0.05


def test_video_folder_bad_keypoints_and_empty(tmp_path, video_folder):
    root, clip = video_folder
    good = (root / "good.mp4").read_bytes()
    (tmp_path / "a.mp4").write_bytes(good)
    (tmp_path / "a.json").write_text("{not json")
    (tmp_path / "b.mp4").write_bytes(good)
    (tmp_path / "b.json").write_text(json.dumps({"frames": [{"people": []}] * VN}))
    (tmp_path / "c.mp4").write_bytes(good)
    (tmp_path / "c.json").write_text(json.dumps([{"people": [{"pose_keypoints_2d": [1.0, 2.0]}]}] * VN))
    (tmp_path / "d.mp4").write_bytes(good)
    (tmp_path / "d.json").write_text(json.dumps(_pose_frames(clip.joints, clip.visible)[:3]))  # too short
    (tmp_path / "e.mp4").write_bytes(good)
    (tmp_path / "e.json").write_text(json.dumps({"frames": _pose_frames(clip.joints, clip.visible)}))
    ds = VideoFolder(tmp_path, frames=4, size=32)
    assert len(ds) == 2 and ds.describe(0) == (str(tmp_path / "e.mp4"), 0)
    reasons = {Path(p).stem: r for p, r in ds.skipped.items()}
    assert set(reasons) == {"a", "b", "c", "d"}
    assert "JSON" in reasons["a"] and "no person" in reasons["b"] and "too short" in reasons["d"]
    for p in ("e.mp4", "e.json"):
        (tmp_path / p).unlink()
    with pytest.raises(InputError, match="no usable clip"):
        VideoFolder(tmp_path, frames=4, size=32)
    with pytest.raises(InputError, match="does not exist"):
        VideoFolder(tmp_path / "missing", frames=4)


# comfyui_controlnet_aux's DWPose Estimator (DWPreprocessor), as its source writes POSE_KEYPOINT
# (src/custom_controlnet_aux/dwpose/__init__.py encode_poses_as_dict, wholebody.py Wholebody.format_result):
# one dict per frame; per person 18 body points in OpenPose order, x and y in pixels of the input image
# (canvas_width / canvas_height = that image's size), confidence 1.0, a point under DWPose's 0.3 written
# [0.0, 0.0, 0.0]; face 70 points (68 + both eyes) and hands 21 points each, or null when no point of the part
# was found; no foot points. The original ControlNet DWPose annotator writes the same with x / W, y / H.
def _aux_person(x0: float, y0: float, s: float, hidden: tuple[int, ...] = (), hands: bool = True) -> dict:
    body = []
    for j in range(18):
        body += [0.0, 0.0, 0.0] if j in hidden else [x0 + s * (j % 3), y0 + s * j, 1.0]
    hand = [v for k in range(21) for v in (x0 + 0.5 * k, y0 + 20 * s, 1.0)]
    face = [v for k in range(70) for v in (x0 + 0.25 * k, y0 + 0.5, 1.0)]
    return {"pose_keypoints_2d": body, "face_keypoints_2d": face,
            "hand_left_keypoints_2d": hand if hands else None, "hand_right_keypoints_2d": None}


def _aux_frames(n: int, width: int, height: int) -> list[dict]:
    """n frames: the main person (large, moving right by 1 px a frame, left ear hidden) and a small one
    behind; the second frame without hands."""
    return [{"people": [_aux_person(4.0 + t, 2.0, 2.0, hidden=(17,), hands=t != 1),
                        _aux_person(60.0, 30.0, 0.5)],
             "canvas_height": height, "canvas_width": width} for t in range(n)]


def test_video_folder_reads_what_comfyui_controlnet_aux_writes(tmp_path, video_folder):
    from im_animation_core.pose_export import save_pose_keypoint_json

    root, _ = video_folder
    frames = _aux_frames(VN, VW, VH)
    for name, data in (("pixels", frames), ("normalised", [
        {**f, "people": [{k: None if v is None else [c / (VW, VH, 1)[i % 3] for i, c in enumerate(v)]
                          for k, v in p.items()} for p in f["people"]]} for f in frames])):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "clip.mp4").write_bytes((root / "good.mp4").read_bytes())
        assert save_pose_keypoint_json(data, folder / "clip.json") == (VN, VN)  # as the save node writes it
        assert json.loads((folder / "clip.json").read_text()) == data  # the frames as they are
        s = VideoFolder(folder, frames=VN, size=None)[0]
        xy, vis = s["driving_joints"], s["driving_visible"]
        for t in range(VN):
            expect = torch.tensor([[4.0 + t + 2.0 * (j % 3), 2.0 + 2.0 * j] for j in range(18)])
            assert vis[t, :17].all() and not vis[t, 17]  # the main person; the hidden left ear stays hidden
            torch.testing.assert_close(xy[t, :17], expect[:17], atol=1e-4, rtol=0)
            assert not vis[t, 18:LEFT_HAND_START].any()  # no feet in this format
            assert bool(vis[t, LEFT_HAND_START:RIGHT_HAND_START].all()) == (t != 1)  # null hands: hidden
            assert not vis[t, RIGHT_HAND_START:].any()
        assert s["driving_face_boxes"].shape == (VN, 4)
    with pytest.raises(InputError, match="no person in any of the 2 frames"):
        save_pose_keypoint_json([{"people": [], "canvas_width": VW, "canvas_height": VH}] * 2, tmp_path / "x.json")
    with pytest.raises(InputError, match="per-frame dicts"):
        save_pose_keypoint_json(["not a frame"], tmp_path / "x.json")
    assert not (tmp_path / "x.json").exists() and not list(tmp_path.glob(".*.tmp"))
