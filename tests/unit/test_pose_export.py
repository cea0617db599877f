"""Retargeted joints out: kept by the retarget step, written as POSE_KEYPOINT and drawn as a skeleton."""

import json

import pytest
import torch

from im_animation_core.errors import InputError
from im_animation_core.expression import ExpressionConfig
from im_animation_core.frames import latent_frame_times, latent_to_pixel_frames
from im_animation_core.heatmaps import heatmap_argmax
from im_animation_core.keypoints import LEFT_HAND_START, NUM_JOINTS, RIGHT_HAND_START, keypoints_from_pose_frames
from im_animation_core.modules import DiTSpec, IMAnimationModules
from im_animation_core.pipeline import retarget, retarget_with_keypoints
from im_animation_core.pose_export import (
    LIMB_BRIGHTNESS,
    OPENPOSE_COLORS,
    pose_keypoint_frames,
    render_pose_frames,
    visible_joints,
)
from im_animation_core.retarget import RetargetConfig

pytestmark = pytest.mark.usefixtures("one_thread")

W, H = 96, 64


def random_joints(frames: int = 3, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(frames, NUM_JOINTS, 2, generator=g) * torch.tensor([W - 1.0, H - 1.0])
    xy = xy.round()  # pixel centres, so that the round trip through x / W is exact up to float rounding
    xy = xy.clamp(min=1.0)  # (0, 0) means "missing" to OpenPose readers
    visible = torch.rand(frames, NUM_JOINTS, generator=g) > 0.3
    return xy, visible


# ---- POSE_KEYPOINT -----------------------------------------------------------------------------------------


def test_pose_keypoint_frames_have_the_dwpose_layout():
    xy, visible = random_joints()
    frames = pose_keypoint_frames(xy, visible, W, H)
    assert len(frames) == 3
    for t, frame in enumerate(frames):
        assert frame["canvas_width"] == W and frame["canvas_height"] == H
        (person,) = frame["people"]
        assert len(person["pose_keypoints_2d"]) == 18 * 3
        assert len(person["hand_left_keypoints_2d"]) == 21 * 3
        assert len(person["hand_right_keypoints_2d"]) == 21 * 3
        assert len(person["foot_keypoints_2d"]) == 6 * 3
        assert person["face_keypoints_2d"] == []
        body = torch.tensor(person["pose_keypoints_2d"]).view(18, 3)
        # Visible: normalised coordinates and confidence 1.0 (DWPose's readers drop c < 1); hidden: 0, 0, 0.
        assert torch.equal(body[:, 2], visible[t, :18].float())
        assert torch.all(body[~visible[t, :18]] == 0)
        torch.testing.assert_close(body[visible[t, :18], :2],
                                   (xy[t, :18] / torch.tensor([W, H]))[visible[t, :18]].float())
        left = torch.tensor(person["hand_left_keypoints_2d"]).view(21, 3)
        assert torch.equal(left[:, 2], visible[t, LEFT_HAND_START:LEFT_HAND_START + 21].float())
        right = torch.tensor(person["hand_right_keypoints_2d"]).view(21, 3)
        assert torch.equal(right[:, 2], visible[t, RIGHT_HAND_START:RIGHT_HAND_START + 21].float())
        feet = torch.tensor(person["foot_keypoints_2d"]).view(6, 3)
        assert feet[:, 2].tolist() == [float(visible[t, 18]), 0, 0, float(visible[t, 19]), 0, 0]


def test_pose_keypoint_frames_read_back_to_the_same_joints():
    xy, visible = random_joints(frames=4, seed=1)
    back_xy, back_visible = keypoints_from_pose_frames(pose_keypoint_frames(xy, visible, W, H))
    assert torch.equal(back_visible, visible)
    torch.testing.assert_close(back_xy[visible], xy[visible], rtol=0, atol=1e-3)


def test_without_hands_the_hand_lists_are_empty():
    xy, visible = random_joints(frames=1)
    (person,) = pose_keypoint_frames(xy, visible, W, H, hands=False)[0]["people"]
    assert person["hand_left_keypoints_2d"] == [] and person["hand_right_keypoints_2d"] == []
    assert len(person["pose_keypoints_2d"]) == 54


def test_joints_off_the_canvas_are_hidden_and_edge_joints_stay_normalised():
    xy = torch.full((1, NUM_JOINTS, 2), 10.0)
    xy[0, 0] = torch.tensor([W + 5.0, 10.0])  # off the canvas
    xy[0, 1] = torch.tensor([-0.4, H - 0.6])  # within the outer half pixel
    visible = torch.ones(1, NUM_JOINTS, dtype=torch.bool)
    body = torch.tensor(pose_keypoint_frames(xy, visible, W, H)[0]["people"][0]["pose_keypoints_2d"]).view(18, 3)
    assert body[0].tolist() == [0.0, 0.0, 0.0]
    assert body[1, 2] == 1.0 and 0.0 <= body[1, 0] < 1.0 and 0.0 <= body[1, 1] < 1.0


def test_visibility_is_the_confidence_above_the_threshold():
    conf = torch.tensor([[0.1, 0.3, 0.31, 0.9]])
    assert visible_joints(conf).tolist() == [[False, False, True, True]]
    assert visible_joints(conf, 0.0).tolist() == [[True, True, True, True]]


@pytest.mark.parametrize("xy, visible, size", [
    (torch.zeros(2, 18, 2), torch.ones(2, 18, dtype=torch.bool), (W, H)),  # body-18, not the J = 62 layout
    (torch.zeros(2, NUM_JOINTS, 2), torch.ones(3, NUM_JOINTS, dtype=torch.bool), (W, H)),
    (torch.zeros(2, NUM_JOINTS, 2), torch.ones(2, NUM_JOINTS, dtype=torch.bool), (0, H)),
])
def test_bad_joints_are_refused(xy, visible, size):
    with pytest.raises(InputError):
        pose_keypoint_frames(xy, visible, *size)
    with pytest.raises(InputError):
        render_pose_frames(xy, visible, *size)


# ---- skeleton picture --------------------------------------------------------------------------------------


def color(i: int, brightness: float = 1.0) -> torch.Tensor:
    return torch.tensor(OPENPOSE_COLORS[i], dtype=torch.float32) / 255 * brightness


def test_render_draws_joints_and_limbs_in_openpose_colours():
    xy = torch.zeros(1, NUM_JOINTS, 2)
    visible = torch.zeros(1, NUM_JOINTS, dtype=torch.bool)
    xy[0, 1] = torch.tensor([20.0, 20.0])  # neck
    xy[0, 2] = torch.tensor([60.0, 20.0])  # right shoulder
    xy[0, 3] = torch.tensor([80.0, 50.0])  # right elbow, hidden: no limb 2-3
    visible[0, 1] = visible[0, 2] = True
    image = render_pose_frames(xy, visible, W, H)
    assert image.shape == (1, H, W, 3) and image.dtype == torch.float32
    assert image.min() >= 0 and image.max() <= 1
    torch.testing.assert_close(image[0, 20, 20], color(1))  # joint discs over the limbs
    torch.testing.assert_close(image[0, 20, 60], color(2))
    torch.testing.assert_close(image[0, 20, 40], color(0, LIMB_BRIGHTNESS))  # limb 0 = neck-right shoulder
    assert image[0, 50, 80].sum() == 0 and image[0, 35, 70].sum() == 0  # the hidden elbow and its limb
    assert image[0, 5, 40].sum() == 0  # background stays black


def test_render_draws_hands_only_when_asked():
    xy = torch.zeros(1, NUM_JOINTS, 2)
    visible = torch.zeros(1, NUM_JOINTS, dtype=torch.bool)
    xy[0, LEFT_HAND_START:LEFT_HAND_START + 21] = torch.tensor([50.0, 30.0])
    visible[0, LEFT_HAND_START:LEFT_HAND_START + 21] = True
    assert render_pose_frames(xy, visible, W, H)[0, 30, 50].tolist() == [0.0, 0.0, 1.0]  # hand points are blue
    assert render_pose_frames(xy, visible, W, H, hands=False).sum() == 0


def test_render_of_nothing_visible_is_black():
    xy, _ = random_joints(frames=2)
    assert render_pose_frames(xy, torch.zeros(2, NUM_JOINTS, dtype=torch.bool), W, H).sum() == 0


# ---- latent frames -> pixel frames -------------------------------------------------------------------------


def test_latent_to_pixel_frames_blends_between_latent_frame_centres():
    centres = latent_frame_times(9)  # 0, 2.5, 6.5
    out = latent_to_pixel_frames(centres[:, None], 9)
    # A signal equal to the time at each centre comes back as the time in between, and held at the ends.
    assert torch.allclose(out[:, 0], torch.tensor([0, 1, 2, 3, 4, 5, 6, 6.5, 6.5]))
    assert torch.equal(latent_to_pixel_frames(torch.ones(1, 3), 1), torch.ones(1, 3))


def test_latent_to_pixel_frames_follows_the_trusted_neighbour():
    values = torch.tensor([[0.0], [10.0], [20.0]])
    weight = torch.tensor([[1.0], [0.0], [1.0]])
    out = latent_to_pixel_frames(values, 9, weight)
    assert out[1, 0] == 0.0 and out[5, 0] == 20.0  # the untrusted middle frame does not pull
    both_zero = latent_to_pixel_frames(values, 9, torch.zeros(3, 1))
    assert torch.allclose(both_zero, latent_to_pixel_frames(values, 9))


# ---- the retarget step keeps the joints --------------------------------------------------------------------


@pytest.fixture(scope="module")
def modules():
    torch.manual_seed(0)
    return IMAnimationModules(RetargetConfig(latent_channels=16, width=32, depth=1, heads=2, out_channels=4),
                              ExpressionConfig(crop_size=32, width=16, tokens=4, base_channels=8),
                              DiTSpec(dim=64, heads=2, depth=6, latent_channels=16)).eval()


def test_retarget_with_keypoints_gives_the_same_motion_and_joints_per_output_frame(modules):
    tokens, ref = torch.randn(9, 32, 12), torch.randn(1, 16, 1, 4, 6)  # a 64x96 frame at 16x compression
    motion, xy, conf = retarget_with_keypoints(modules, tokens, ref, 9, (64, 96))
    assert torch.equal(motion, retarget(modules, tokens, ref, 9))
    assert xy.shape == (9, NUM_JOINTS, 2) and conf.shape == (9, NUM_JOINTS)
    assert xy.dtype == torch.float32 and conf.dtype == torch.float32
    assert (xy[..., 0] >= -0.5).all() and (xy[..., 0] <= 95.5).all()
    assert (xy[..., 1] >= -0.5).all() and (xy[..., 1] <= 63.5).all()
    # Pixel frame 0 is latent frame 0 alone: its joints are the heatmap head's, read in output pixels.
    rt = modules.retarget
    with torch.no_grad():
        _, feats = rt(tokens[None], torch.arange(9, dtype=torch.float32), ref[:, :, 0], latent_frame_times(9),
                      return_features=True)
        heat = rt.heatmap_head(feats, rt.grid(ref[:, :, 0]))[0]
    first_xy, first_conf = heatmap_argmax(heat[:1], in_size=(64, 96))
    torch.testing.assert_close(xy[0], first_xy[0])
    torch.testing.assert_close(conf[0], first_conf[0])


def test_long_clips_keep_one_pose_per_output_frame(modules):
    tokens, ref = torch.randn(33, 32, 12), torch.randn(1, 16, 1, 4, 4)
    motion, xy, conf = retarget_with_keypoints(modules, tokens, ref, 33, (64, 64), clip_frames=17)
    assert motion.shape[2] == 9 and xy.shape == (33, NUM_JOINTS, 2) and conf.shape == (33, NUM_JOINTS)
    # The first segment's frames are those of a short run on its frames.
    _, short_xy, _ = retarget_with_keypoints(modules, tokens, ref, 17, (64, 64))
    torch.testing.assert_close(xy[:15], short_xy[:15], rtol=0, atol=1e-5)


# COCO-17 body point names in COCO's order (the first 17 of COCO-WholeBody's 133), written out here rather
# than derived from the converter's table, so the test checks the mapping by name.
COCO_BODY = ("nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
             "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee",
             "right_knee", "left_ankle", "right_ankle")


def test_coco_wholebody_predictions_become_the_dwpose_layout():
    from im_animation_core.keypoints import BODY_JOINT_NAMES
    from im_animation_core.pose_export import pose_frame_from_wholebody

    kp = torch.zeros(2, 133, 2)
    kp[0, :, 0] = 10 + torch.arange(133) * 1.25  # a distinct place per point
    kp[0, :, 1] = 5 + (torch.arange(133) % 97) * 1.1
    kp[1] = kp[0] * 0.1 + 100  # a small second person in a corner
    sc = torch.full((2, 133), 0.9)
    sc[0, COCO_BODY.index("left_ear")] = 0.1  # under DWPose's 0.3: dropped
    sc[0, 112:133] = 0.05  # the right hand not found at all
    frame = pose_frame_from_wholebody(kp.numpy(), sc.numpy(), 200, 120)
    assert frame["canvas_width"] == 200 and frame["canvas_height"] == 120 and len(frame["people"]) == 2
    person = frame["people"][0]
    assert len(person["pose_keypoints_2d"]) == 54 and len(person["face_keypoints_2d"]) == 68 * 3
    assert person["hand_right_keypoints_2d"] is None and len(person["hand_left_keypoints_2d"]) == 63
    json.dumps(frame)  # plain numbers and None only

    (xy,), (vis,) = keypoints_from_pose_frames([frame])
    for j, name in enumerate(BODY_JOINT_NAMES):
        if name == "neck":
            expect = (kp[0, 5] + kp[0, 6]) / 2
        elif name in ("left_big_toe", "right_big_toe"):  # COCO-WholeBody feet 17-22: big toe, small toe, heel
            expect = kp[0, 17 if name.startswith("left") else 20]
        else:
            expect = kp[0, COCO_BODY.index(name)]
        assert bool(vis[j]) == (name != "left_ear"), name
        if vis[j]:
            torch.testing.assert_close(xy[j], expect, atol=1e-4, rtol=0, msg=name)
    torch.testing.assert_close(xy[LEFT_HAND_START:RIGHT_HAND_START], kp[0, 91:112], atol=1e-4, rtol=0)
    assert not vis[RIGHT_HAND_START:].any()
    assert pose_frame_from_wholebody(torch.zeros(0, 133, 2), torch.zeros(0, 133), 200, 120)["people"] == []
    with pytest.raises(InputError, match="not COCO-WholeBody"):
        pose_frame_from_wholebody(torch.zeros(1, 134, 2), torch.zeros(1, 134), 200, 120)
