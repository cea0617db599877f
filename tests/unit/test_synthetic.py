"""im_animation_core.synthetic: procedural characters, forward kinematics, seeded splits."""

from __future__ import annotations

import math

import pytest
import torch

from im_animation_core.keypoints import (
    BODY_LIMBS,
    HAND_BONES,
    LEFT_HAND_START,
    NUM_JOINTS,
    RIGHT_HAND_START,
    face_box_from_keypoints,
    face_boxes_from_joints,
)
from im_animation_core.synthetic import (
    MOTION_CHANNELS,
    SPLIT_RANGES,
    Identity,
    Motion,
    identity_split_values,
    in_split,
    motion_split_values,
    render_clip,
    render_rest,
    render_sample,
    sample_identity,
    sample_motion,
    skeleton,
    split_of,
)
from im_animation_core.synthetic.character import CH

pytestmark = pytest.mark.usefixtures("one_thread")


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# A character whose colours have no blue, on a pure blue background: "body-coloured" = blue channel low.
CONTRAST = Identity(body_color=(0.9, 0.3, 0.0), leg_color=(0.3, 0.6, 0.0), head_color=(1.0, 0.8, 0.0),
                    hair_color=(0.4, 0.2, 0.0), stripe_color=(1.0, 1.0, 0.0), pattern="hstripes",
                    background=(0.0, 0.0, 1.0))


def test_old_api_and_shapes():
    """Identity / Motion keyword arguments of the first renderer (tools/media.py) still work."""
    ident = Identity(torso=0.3, upper_arm=0.16, forearm=0.15, thigh=0.2, shin=0.19, thickness=0.02, scale=0.85,
                     center_x=0.42, pelvis_y=0.5, body_color=(0.2, 0.7, 0.3), background=(0.25, 0.22, 0.2))
    still = render_clip(ident, Motion(arm_swing=0.0, leg_swing=0.0, torso_sway=0.0), 1, 128, 96)
    clip = render_clip(Identity(torso=0.2, thigh=0.13, shin=0.13, thickness=0.035), Motion(period=16), 5, 64, 80)
    assert still.shape == (1, 128, 96, 3) and clip.shape == (5, 64, 80, 3)
    assert clip.dtype == torch.float32 and 0 <= float(clip.min()) and float(clip.max()) <= 1
    assert not torch.equal(clip[0], clip[2])  # it moves
    out = render_sample(CONTRAST, Motion(), 4, 64, 64)
    assert out.joints.shape == (4, NUM_JOINTS, 2) and out.visible.shape == (4, NUM_JOINTS)
    assert out.face_boxes.shape == (4, 4) and out.expression.shape == (4, 2) and out.mask.shape == (4, 64, 64)
    assert out.visible.dtype == torch.bool


def test_deterministic():
    a1, a2 = sample_identity(gen(5)), sample_identity(gen(5))
    m1, m2 = sample_motion(gen(6)), sample_motion(gen(6))
    assert a1 == a2 and m1 == m2
    assert sample_identity(gen(7)) != a1
    r1, r2 = render_sample(a1, m1, 6, 48, 64), render_sample(a2, m2, 6, 48, 64)
    for f in ("frames", "joints", "visible", "face_boxes", "expression", "mask"):
        assert torch.equal(getattr(r1, f), getattr(r2, f)), f


def _values_in(values: dict, split: str) -> bool:
    return all(in_split(k, v, split) for k, v in values.items())


def test_split_ranges_are_disjoint():
    for name, r in SPLIT_RANGES.items():
        for lo, hi in r["heldout"]:
            for tlo, thi in r["train"]:
                assert hi <= tlo or lo >= thi, name


@pytest.mark.parametrize("split", ["train", "heldout"])
def test_held_out_parameters_outside_training_ranges(split):
    other = "train" if split == "heldout" else "heldout"
    g = gen(11)
    for _ in range(40):
        ident_values = identity_split_values(sample_identity(g, split))
        motion_values = motion_split_values(sample_motion(g, split))
        for values in (ident_values, motion_values):
            assert split_of(values) == split
            assert _values_in(values, split)
            # every controlled value lies outside all of the other split's ranges
            assert not any(in_split(k, v, other) for k, v in values.items()), values


def _limb_lengths(j: torch.Tensor) -> torch.Tensor:
    """[...,62,2] -> [...,L] lengths of the body limbs and hand bones."""
    pairs = list(BODY_LIMBS) + [(a + s, b + s) for s in (LEFT_HAND_START, RIGHT_HAND_START) for a, b in HAND_BONES]
    a = j[..., [p for p, _ in pairs], :]
    b = j[..., [q for _, q in pairs], :]
    return (b - a).norm(dim=-1)


def _angles(j: torch.Tensor, pairs) -> torch.Tensor:
    d = j[..., [q for _, q in pairs], :] - j[..., [p for p, _ in pairs], :]
    return torch.atan2(d[..., 1], d[..., 0])


def test_cross_reenactment_ground_truth():
    """The same motion on two bodies: each body keeps its own limb lengths, every limb has the driver's angle."""
    g = gen(3)
    a, b = sample_identity(g), sample_identity(g)
    motion = sample_motion(g, kind="dance")
    T, H, W = 12, 96, 80
    drv, tgt = render_sample(a, motion, T, H, W), render_sample(b, motion, T, H, W)
    rest_b = render_rest(b, H, W)

    # limb lengths of the target are B's own (in pixels: length * scale * H), in every frame
    S = b.scale * H
    arm_l = (tgt.joints[:, 6] - tgt.joints[:, 5]).norm(dim=-1)  # left shoulder -> elbow
    fore_r = (tgt.joints[:, 4] - tgt.joints[:, 3]).norm(dim=-1)
    thigh_l = (tgt.joints[:, 12] - tgt.joints[:, 11]).norm(dim=-1)
    shin_r = (tgt.joints[:, 10] - tgt.joints[:, 9]).norm(dim=-1)
    torso = (tgt.joints[:, 1] - (tgt.joints[:, 8] + tgt.joints[:, 11]) / 2).norm(dim=-1)
    for measured, expected in ((arm_l, b.upper_arm), (fore_r, b.forearm), (thigh_l, b.thigh), (shin_r, b.shin),
                               (torso, b.torso)):
        torch.testing.assert_close(measured, torch.full((T,), expected * S), atol=1e-3, rtol=1e-4)
    # arms and legs: the rest-pose lengths of B (hands shorten when they close: compare those through ratios)
    limbs = [(2, 3), (3, 4), (5, 6), (6, 7), (8, 9), (9, 10), (11, 12), (12, 13), (13, 18), (10, 19)]

    def lengths(j):
        return (j[..., [q for _, q in limbs], :] - j[..., [p for p, _ in limbs], :]).norm(dim=-1)

    torch.testing.assert_close(lengths(tgt.joints), lengths(rest_b.joints).expand(T, -1), atol=2e-3, rtol=1e-4)
    ll = _limb_lengths
    # the ratio target / driver of every bone is the ratio of B's to A's proportions: per frame constant
    ratio = ll(tgt.joints) / ll(drv.joints).clamp_min(1e-6)
    hand_ratio = ratio[:, len(BODY_LIMBS):]
    palm_ratio, finger_ratio = (b.scale * b.palm) / (a.scale * a.palm), (b.scale * b.finger) / (a.scale * a.finger)
    expect_hand = torch.tensor([palm_ratio if p == 0 else finger_ratio for p, _ in HAND_BONES] * 2).expand(T, -1)
    long_bone = ll(drv.joints)[:, len(BODY_LIMBS):] > 0.5  # skip nearly folded finger bones
    torch.testing.assert_close(hand_ratio[long_bone], expect_hand[long_bone], rtol=2e-3, atol=2e-3)
    # every limb's and bone's direction is the driver's
    pairs = limbs + [(a_ + s, b_ + s) for s in (LEFT_HAND_START, RIGHT_HAND_START) for a_, b_ in HAND_BONES]
    diff = torch.remainder(_angles(tgt.joints, pairs) - _angles(drv.joints, pairs) + math.pi, 2 * math.pi) - math.pi
    long_ = torch.cat([torch.ones(T, len(limbs), dtype=torch.bool), long_bone[:, -2 * len(HAND_BONES):]], dim=1)
    assert float(diff[long_].abs().max()) < 1e-3
    # the expression state is the motion's, on both bodies
    assert torch.equal(drv.expression, tgt.expression)
    torch.testing.assert_close(drv.expression, motion.curves(T)[:, [CH["mouth"], CH["eyes"]]].float())


def test_joints_lie_on_the_drawn_body():
    """At every visible joint the pixel is covered by the character and has its colours, not the background."""
    g = gen(21)
    for i in range(6):
        ident = sample_identity(g, "train" if i % 2 else "heldout")
        ident.background, ident.background2 = (0.0, 0.0, 1.0), None
        for colour in ("body_color", "head_color", "hair_color", "stripe_color"):
            setattr(ident, colour, tuple(getattr(ident, colour)[:2]) + (0.0,))
        ident.leg_color = tuple(ident.legs_color[:2]) + (0.0,)
        motion = sample_motion(g)
        out = render_sample(ident, motion, 6, 128, 112, start=3 * i)
        t, j = torch.nonzero(out.visible, as_tuple=True)
        xy = out.joints[t, j].round().long()
        mask_at = out.mask[t, xy[:, 1], xy[:, 0]]
        blue_at = out.frames[t, xy[:, 1], xy[:, 0], 2]
        assert float(mask_at.min()) > 0.5, (i, j[mask_at <= 0.5])
        assert float(blue_at.max()) < 0.5, (i, j[blue_at >= 0.5])
        assert len(t) > 0.5 * out.visible.numel()
    # the mask is exactly where the frame differs from the background
    out = render_sample(CONTRAST, Motion(wave=0.8), 4, 64, 64)
    assert torch.equal(out.mask == 0, (out.frames == torch.tensor([0.0, 0.0, 1.0])).all(-1))


def test_visibility_follows_the_frame():
    ident = Identity(center_x=0.97)  # the left (image right) arm and hand leave the frame
    out = render_sample(ident, Motion.rest(), 1, 64, 64)
    inside = (out.joints[..., 0] >= -0.5) & (out.joints[..., 0] < 63.5)
    assert not bool(out.visible[~inside].any())
    assert not bool(out.visible[0, LEFT_HAND_START:RIGHT_HAND_START].all())


def test_expression_is_drawn():
    """Mouth open / eyes closed change the face: more mouth-coloured pixels, fewer eye-coloured pixels."""
    closed = Motion.rest()
    talk = Motion.rest()
    talk.mouth, talk.mouth_period, talk.mouth_phase = 1.0, 4.0, 0.0  # frame 1: fully open
    blink = Motion.rest()
    blink.blink_period, blink.blink_offset = 8.0, 1.0  # frame 1: eyes closed
    ident = Identity(scale=1.0, head_radius=0.08)
    base, open_, shut = (render_sample(ident, m, 2, 128, 128) for m in (closed, talk, blink))
    assert float(open_.expression[1, 0]) == pytest.approx(1.0) and float(base.expression[1, 0]) == 0.0
    assert float(shut.expression[1, 1]) < 0.1 and float(base.expression[1, 1]) == 1.0

    def count(frame, colour):
        return int(((frame - torch.tensor(colour)).abs().amax(-1) < 0.1).sum())

    mouth_colour, eye_colour = (0.45, 0.05, 0.1), (0.05, 0.05, 0.08)
    assert count(open_.frames[1], mouth_colour) > 3 * count(base.frames[1], mouth_colour) + 10
    assert count(shut.frames[1], eye_colour) < 0.5 * count(base.frames[1], eye_colour)
    # the face box contains the head
    box = base.face_boxes[1]
    head = skeleton(ident, closed.curves(2), 128, 128).head_center[1]
    assert box[0] < head[0] < box[2] and box[1] < head[1] < box[3]


def test_face_boxes_match_keypoints_function():
    g = gen(4)
    ident, motion = sample_identity(g), sample_motion(g, kind="turn")
    sk = skeleton(ident, motion.curves(10), 64, 96)
    vis = sk.visible.clone()
    vis[2, 0] = False
    vis[4:6, [0, 14, 15, 16, 17]] = False  # no face: the previous frame's box
    boxes = face_boxes_from_joints(sk.joints, vis, 64, 96)
    for t in range(10):
        ref = face_box_from_keypoints(sk.joints[t], vis[t], image_size=(64, 96))
        if ref is None:
            torch.testing.assert_close(boxes[t], boxes[t - 1])
        else:
            torch.testing.assert_close(boxes[t], ref, atol=1e-4, rtol=1e-5)


def test_motion_kinds_move_their_parts():
    t = 24
    rest = Motion.rest().curves(t)
    walk, wave = sample_motion(gen(1), kind="walk").curves(t), sample_motion(gen(1), kind="wave").curves(t)
    dance, turn = sample_motion(gen(1), kind="dance").curves(t), sample_motion(gen(1), kind="turn").curves(t)
    assert rest.shape == (t, len(MOTION_CHANNELS)) and float(rest.std(0).max()) == 0.0

    def moves(c, name):
        return float(c[:, CH[name]].std()) > 0.02

    assert moves(walk, "l_hip") and moves(walk, "l_shoulder")
    assert moves(wave, "l_elbow") or moves(wave, "r_elbow")
    assert moves(dance, "root_x") and moves(dance, "lean")
    assert moves(turn, "turn") and moves(turn, "head_turn")
    for c in (walk, wave, dance, turn):
        assert moves(c, "l_curl") and moves(c, "eyes")
        assert float(c[:, CH["l_curl"]].min()) >= 0 and float(c[:, CH["l_curl"]].max()) <= 1

def test_min_contrast_recolours_the_body_away_from_the_background_keeping_hue_and_split():
    import colorsys

    from im_animation_core.data import SyntheticPairs
    from im_animation_core.synthetic.sampling import identity_split_values, luminance, split_of

    plain = SyntheticPairs("heldout", 40, frames=1, size=64, seed=5)
    vivid = SyntheticPairs("heldout", 40, frames=1, size=64, seed=5, min_contrast=0.3)
    moved = 0
    for i in range(40):
        a, b = plain.parameters(i)[1], vivid.parameters(i)[1]
        ends = [b.background] + ([b.background2] if b.background2 is not None else [])
        for name in ("body_color", "head_color", "hair_color", "legs_color"):
            before, after = getattr(a, name), getattr(b, name)
            gaps = [abs(luminance(after) - luminance(e)) for e in ends]
            # at least 0.3 from the gradient's nearer end of its own side, and never close to the other end
            assert max(gaps) >= 0.3 - 1e-9 and min(gaps) >= 0.3 - 0.26, (i, name, gaps)
            if max(before) - min(before) > 0.05:  # hue defined: kept
                h0, h1 = colorsys.rgb_to_hsv(*before)[0], colorsys.rgb_to_hsv(*after)[0]
                assert min(abs(h0 - h1), 1 - abs(h0 - h1)) < 1e-6, (i, name)
            moved += before != after
        assert split_of(identity_split_values(b)) == "heldout"
    assert moved > 10  # the option did something
    # on a solid background the contrast is exact
    solid = [vivid.parameters(i)[1] for i in range(40) if vivid.parameters(i)[1].background2 is None]
    assert solid and all(abs(luminance(x.body_color) - luminance(x.background)) >= 0.3 - 1e-9 for x in solid)
    with pytest.raises(ValueError, match="min_contrast"):
        SyntheticPairs("train", 1, min_contrast=0.8)
