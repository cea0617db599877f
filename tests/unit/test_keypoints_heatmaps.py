"""Joint layout, POSE_KEYPOINT parsing, Gaussian heatmaps and reading joints back from them."""

from __future__ import annotations

import pytest
import torch

from im_animation_core.errors import InputError
from im_animation_core.heatmaps import heatmap_argmax, heatmaps_to_image, joint_colors, render_heatmaps
from im_animation_core.keypoints import (
    BODY_LIMBS,
    HEAD_JOINTS,
    JOINT_NAMES,
    LEFT_HAND_START,
    NUM_JOINTS,
    RIGHT_HAND_START,
    SKELETON_EDGES,
    face_box_from_keypoints,
    face_boxes_from_joints,
    fallback_face_boxes,
    keypoints_from_pose_dict,
    keypoints_from_pose_frames,
)
from im_animation_core.pipeline import face_boxes

CW, CH = 200, 100  # canvas width, height


def flat(points):
    return [float(v) for p in points for v in p]


def make_person(offset=0.0, conf=1.0):
    """A person in pixel coordinates of a CW x CH canvas: body point k at (10 + 5k, 20 + 2k), left hand
    point k at (100 + k, 50), right hand point k at (150 + k, 60), foot point k at (30 + k, 90)."""
    body = [(10 + 5 * k + offset, 20 + 2 * k, conf) for k in range(18)]
    body[3] = (0.0, 0.0, 0.0)  # right elbow missing, written as OpenPose does
    body[7] = (70.0, 30.0, 0.1)  # left wrist below the confidence threshold
    return {
        "pose_keypoints_2d": flat(body),
        "foot_keypoints_2d": flat([(30 + k + offset, 90, conf) for k in range(6)]),
        "hand_left_keypoints_2d": flat([(100 + k + offset, 50, conf) for k in range(21)]),
        "hand_right_keypoints_2d": flat([(150 + k + offset, 60, conf) for k in range(21)]),
        "face_keypoints_2d": flat([(0, 0, 0)] * 68),
    }


def normalise(person):
    out = {}
    for key, values in person.items():
        pts = [values[i : i + 3] for i in range(0, len(values), 3)]
        out[key] = flat([(x / CW, y / CH, c) for x, y, c in pts])
    return out


def test_layout():
    assert NUM_JOINTS == 62 == len(JOINT_NAMES) == len(set(JOINT_NAMES))
    assert JOINT_NAMES[18:20] == ("left_big_toe", "right_big_toe")
    assert (
        JOINT_NAMES[LEFT_HAND_START] == "left_hand_wrist"
        and JOINT_NAMES[RIGHT_HAND_START] == "right_hand_wrist"
    )
    assert all(0 <= a < NUM_JOINTS and 0 <= b < NUM_JOINTS and a != b for a, b in SKELETON_EDGES)
    assert len(BODY_LIMBS) == 19 and len(SKELETON_EDGES) == 19 + 2 * 20
    # Every joint is on the skeleton.
    assert {j for e in SKELETON_EDGES for j in e} == set(range(NUM_JOINTS))


def test_pixel_dict():
    frame = {"people": [make_person()], "canvas_width": CW, "canvas_height": CH}
    xy, vis = keypoints_from_pose_dict(frame, CW, CH)
    assert xy.shape == (NUM_JOINTS, 2) and xy.dtype == torch.float32 and vis.dtype == torch.bool
    assert vis.sum() == NUM_JOINTS - 2 and not vis[3] and not vis[7]
    assert xy[3].tolist() == [0.0, 0.0] and xy[7].tolist() == [0.0, 0.0]
    assert xy[5].tolist() == [35.0, 30.0]  # left shoulder
    assert xy[18].tolist() == [30.0, 90.0] and xy[19].tolist() == [33.0, 90.0]  # big toes: foot 0 and 3
    assert xy[LEFT_HAND_START + 4].tolist() == [104.0, 50.0]
    assert xy[RIGHT_HAND_START + 20].tolist() == [170.0, 60.0]


def test_normalised_equals_pixel():
    pixel = {"people": [make_person()], "canvas_width": CW, "canvas_height": CH}
    norm = {"people": [normalise(make_person())], "canvas_width": CW, "canvas_height": CH}
    xy_p, vis_p = keypoints_from_pose_dict(pixel, CW, CH)
    xy_n, vis_n = keypoints_from_pose_dict(norm, CW, CH)
    assert torch.equal(vis_p, vis_n)
    torch.testing.assert_close(xy_n, xy_p, atol=1e-4, rtol=0)
    # Forcing the interpretation overrides the detection.
    xy_forced, _ = keypoints_from_pose_dict(norm, CW, CH, normalized=False)
    assert float(xy_forced.max()) <= 1.0


def test_rescale_to_other_size():
    frame = {"people": [make_person()], "canvas_width": CW, "canvas_height": CH}
    xy, vis = keypoints_from_pose_dict(frame, 2 * CW, 2 * CH)
    ref, _ = keypoints_from_pose_dict(frame)
    # Pixel centres: x -> (x + 0.5) * 2 - 0.5.
    torch.testing.assert_close(xy[vis], (ref[vis] + 0.5) * 2 - 0.5)


def test_missing_parts_body25_and_people_choice():
    person = make_person()
    person["hand_left_keypoints_2d"] = None
    del person["foot_keypoints_2d"]
    xy, vis = keypoints_from_pose_dict({"people": [person]}, CW, CH)
    assert not vis[18:20].any() and not vis[LEFT_HAND_START:RIGHT_HAND_START].any()
    assert vis[RIGHT_HAND_START:].all()

    body25 = [(float(k), float(k) + 1, 1.0) for k in range(25)]
    xy, vis = keypoints_from_pose_dict({"people": [{"pose_keypoints_2d": flat(body25)}]}, CW, CH)
    assert xy[8].tolist() == [9.0, 10.0]  # BODY_25's right hip (9) -> OpenPose-18 index 8
    assert xy[18].tolist() == [19.0, 20.0] and xy[19].tolist() == [22.0, 23.0]

    small = {"pose_keypoints_2d": flat([(50 + k * 0.1, 50, 1.0) for k in range(18)])}
    frame = {"people": [small, make_person()], "canvas_width": CW, "canvas_height": CH}
    xy, _ = keypoints_from_pose_dict(frame)
    assert xy[5].tolist() == [35.0, 30.0]  # the larger person is picked
    xy, _ = keypoints_from_pose_dict(frame, person=0)
    assert xy[0].tolist() == [50.0, 50.0]

    xy, vis = keypoints_from_pose_dict({"people": [], "canvas_width": CW, "canvas_height": CH})
    assert not vis.any() and not xy.any()


def test_bad_pose_input():
    with pytest.raises(InputError, match="multiple of 3"):
        keypoints_from_pose_dict({"people": [{"pose_keypoints_2d": [1.0, 2.0]}]}, CW, CH)
    with pytest.raises(InputError, match="18"):
        keypoints_from_pose_dict({"people": [{"pose_keypoints_2d": [1.0, 2.0, 1.0] * 5}]}, CW, CH)
    with pytest.raises(InputError, match="dict"):
        keypoints_from_pose_dict([1, 2, 3], CW, CH)
    with pytest.raises(InputError, match="canvas"):
        keypoints_from_pose_dict({"people": [make_person()]})
    with pytest.raises(InputError, match="out of range"):
        keypoints_from_pose_dict({"people": [make_person()]}, CW, CH, person=3)
    with pytest.raises(InputError, match="empty"):
        keypoints_from_pose_frames([], CW, CH)


def test_frames_helper():
    frames = [{"people": [make_person(offset=t)], "canvas_width": CW, "canvas_height": CH} for t in range(3)]
    xy, vis = keypoints_from_pose_frames(frames)
    assert xy.shape == (3, NUM_JOINTS, 2) and vis.shape == (3, NUM_JOINTS)
    assert xy[:, 0, 0].tolist() == [10.0, 11.0, 12.0]


def test_face_box():
    xy = torch.zeros(NUM_JOINTS, 2)
    vis = torch.zeros(NUM_JOINTS, dtype=torch.bool)
    assert face_box_from_keypoints(xy, vis) is None
    head = {0: (50.0, 40.0), 14: (45.0, 35.0), 15: (55.0, 35.0), 16: (40.0, 37.0), 17: (60.0, 37.0)}
    for j, p in head.items():
        xy[j] = torch.tensor(p)
        vis[j] = True
    box = face_box_from_keypoints(xy, vis)
    assert box.shape == (4,)
    x0, y0, x1, y1 = box.tolist()
    assert x1 - x0 == pytest.approx(y1 - y0) == pytest.approx(1.8 * 20)
    assert (x0 + x1) / 2 == pytest.approx(50) and (y0 + y1) / 2 == pytest.approx(40)
    assert all(x0 < xy[j, 0] < x1 and y0 < xy[j, 1] < y1 for j in HEAD_JOINTS)
    # Clipped to the image; one head joint alone needs the neck for a size.
    clipped = face_box_from_keypoints(xy, vis, image_size=(50, 52))
    assert clipped[2] == 52 and clipped[3] == 50
    vis[14:18] = False
    assert face_box_from_keypoints(xy, vis) is None
    xy[1], vis[1] = torch.tensor([50.0, 60.0]), True
    assert face_box_from_keypoints(xy, vis)[2] - face_box_from_keypoints(xy, vis)[0] == pytest.approx(24.0)


def test_heatmap_peak_at_joint_and_invisible_zero():
    xy = torch.tensor([[[5.0, 7.0], [20.0, 3.0], [11.0, 11.0]]])
    vis = torch.tensor([[True, True, False]])
    hm = render_heatmaps(xy, vis, (16, 24), sigma=1.5)
    assert hm.shape == (1, 3, 16, 24) and hm.dtype == torch.float32
    assert float(hm.min()) >= 0 and float(hm.max()) <= 1
    for j in range(2):
        iy, ix = divmod(int(hm[0, j].argmax()), 24)
        assert (ix, iy) == (int(xy[0, j, 0]), int(xy[0, j, 1]))
        assert float(hm[0, j, iy, ix]) == pytest.approx(1.0)
    assert not hm[0, 2].any()
    # A Gaussian: value at distance sigma is exp(-1/2).
    assert float(hm[0, 0, 7, 5 + 3]) == pytest.approx(torch.exp(torch.tensor(-(3**2) / (2 * 1.5**2))).item())


def test_heatmap_in_size_mapping():
    # Image 128 x 256 -> heatmap 32 x 64 (scale 1/4). Pixel centre 4k + 1.5 maps to heatmap pixel k.
    xy = torch.tensor([[[4 * 10 + 1.5, 4 * 6 + 1.5]]])
    hm = render_heatmaps(xy, torch.ones(1, 1, dtype=torch.bool), (32, 64), sigma=2.0, in_size=(128, 256))
    iy, ix = divmod(int(hm[0, 0].argmax()), 64)
    assert (ix, iy) == (10, 6)
    assert float(hm.max()) == pytest.approx(1.0)


@pytest.mark.parametrize("subpixel", ["quadratic", "soft"])
def test_argmax_inverts_render(subpixel):
    g = torch.Generator().manual_seed(0)
    b, j, h, w = 2, NUM_JOINTS, 64, 48
    xy = torch.rand(b, j, 2, generator=g) * torch.tensor([w - 9.0, h - 9.0]) + 4  # away from the border
    vis = torch.ones(b, j, dtype=torch.bool)
    hm = render_heatmaps(xy, vis, (h, w), sigma=2.0)
    got, conf = heatmap_argmax(hm, subpixel=subpixel)
    assert got.shape == (b, j, 2) and conf.shape == (b, j)
    assert float((got - xy).abs().max()) < 0.5
    assert float(conf.min()) > 0.75
    if subpixel == "quadratic":  # exact for rendered Gaussians
        assert float((got - xy).abs().max()) < 1e-3

    # Back to image pixels through in_size: within half a heatmap pixel (= 2 image pixels at scale 4).
    img = xy * 4 + 1.5
    hm = render_heatmaps(img, vis, (h, w), sigma=2.0, in_size=(4 * h, 4 * w))
    got, _ = heatmap_argmax(hm, subpixel=subpixel, in_size=(4 * h, 4 * w))
    assert float((got - img).abs().max()) < 0.5 * 4


def test_argmax_integer_and_border():
    xy = torch.tensor([[[0.2, 5.0], [9.0, 15.0]]])
    hm = render_heatmaps(xy, torch.ones(1, 2, dtype=torch.bool), (16, 10), sigma=1.0)
    got, _ = heatmap_argmax(hm, subpixel="none")
    assert got.tolist() == [[[0.0, 5.0], [9.0, 15.0]]]
    got, _ = heatmap_argmax(hm)  # at the border the refinement is off, never off the map
    assert float((got - xy).abs().max()) < 0.5
    with pytest.raises(ValueError):
        heatmap_argmax(hm, subpixel="nope")


def test_preview_image():
    hm = render_heatmaps(
        torch.tensor([[[3.0, 3.0], [8.0, 2.0]]]), torch.ones(1, 2, dtype=torch.bool), (8, 12)
    )
    img = heatmaps_to_image(hm)
    assert img.shape == (1, 8, 12, 3) and float(img.min()) >= 0 and float(img.max()) <= 1
    colours = joint_colors(NUM_JOINTS)
    assert colours.shape == (NUM_JOINTS, 3) and len({tuple(c) for c in colours.tolist()}) == NUM_JOINTS


def test_face_boxes_of_a_clip_whose_first_frames_have_no_face():
    # frames 0-1: no head joint; 2: a face; 3: none again; 4: the face moved right
    faceless = make_person()
    body = [faceless["pose_keypoints_2d"][i:i + 3] for i in range(0, 54, 3)]
    for j in HEAD_JOINTS:
        body[j] = [0.0, 0.0, 0.0]
    faceless = {**faceless, "pose_keypoints_2d": flat(body)}
    people = [faceless, faceless, make_person(), faceless, make_person(offset=20.0)]
    frames = [{"people": [p], "canvas_width": CW, "canvas_height": CH} for p in people]
    xy, vis = keypoints_from_pose_frames(frames, CW, CH)
    first = face_box_from_keypoints(xy[2], vis[2], image_size=(CH, CW))
    later = face_box_from_keypoints(xy[4], vis[4], image_size=(CH, CW))
    expected = torch.stack([first, first, first, first, later])
    # training data (joints) and the inference node (POSE_KEYPOINT) follow the same rule
    for boxes in (face_boxes_from_joints(xy, vis, CH, CW), face_boxes(frames, CW, CH)):
        torch.testing.assert_close(boxes, expected)
    # no face anywhere: the fallback box throughout
    none = [{"people": [faceless], "canvas_width": CW, "canvas_height": CH}] * 3
    torch.testing.assert_close(face_boxes(none, CW, CH), fallback_face_boxes(3, CH, CW))
