"""im_animation_core.data: synthetic pairs, video folders, Stage-2 augmentations, collation."""

from __future__ import annotations

import pytest
import torch

from im_animation_core.data import (
    PAIR_KEYS,
    AugmentConfig,
    AugmentedPairs,
    SyntheticPairs,
    augment_pair,
    collate_pairs,
    transform_points,
    warp_frames,
)
from im_animation_core.errors import InputError
from im_animation_core.heatmaps import heatmap_argmax, render_heatmaps
from im_animation_core.keypoints import LEFT_HAND_START, NUM_JOINTS
from im_animation_core.synthetic import (
    Identity,
    Motion,
    identity_split_values,
    motion_split_values,
    render_rest,
    render_sample,
    skeleton,
    split_of,
)

pytestmark = pytest.mark.usefixtures("one_thread")


T, H, W = 6, 64, 64


def test_synthetic_pairs_keys_shapes_and_determinism():
    ds = SyntheticPairs("train", num_samples=5, frames=T, size=(H, W), seed=3)
    s = ds[2]
    assert set(s) == set(PAIR_KEYS)
    shapes = {
        "driving": (T, H, W, 3), "driving_joints": (T, NUM_JOINTS, 2), "driving_visible": (T, NUM_JOINTS),
        "driving_face_boxes": (T, 4), "identity": (H, W, 3), "identity_joints": (NUM_JOINTS, 2),
        "identity_visible": (NUM_JOINTS,), "target": (T, H, W, 3), "target_joints": (T, NUM_JOINTS, 2),
        "target_visible": (T, NUM_JOINTS), "target_face_boxes": (T, 4), "expression": (T, 2),
    }
    for key, shape in shapes.items():
        assert tuple(s[key].shape) == shape, key
        assert s[key].dtype == (torch.bool if key.endswith("visible") else torch.float32), key
    again = SyntheticPairs("train", num_samples=5, frames=T, size=(H, W), seed=3)[2]
    assert all(torch.equal(s[k], again[k]) for k in PAIR_KEYS)
    other = ds[3]
    assert not torch.equal(s["target"], other["target"])
    assert not torch.equal(s["driving"], SyntheticPairs("train", 5, T, (H, W), seed=4)[2]["driving"])
    with pytest.raises(IndexError):
        ds.parameters(5)


def test_synthetic_pairs_are_cross_reenactment_ground_truth():
    ds = SyntheticPairs("heldout", num_samples=3, frames=T, size=(H, W), seed=0)
    a, b, motion = ds.parameters(1)
    s = ds[1]
    assert a != b
    assert split_of(identity_split_values(a)) == split_of(identity_split_values(b)) == "heldout"
    assert split_of(motion_split_values(motion)) == "heldout"
    tgt = render_sample(b, motion, T, H, W)
    drv = render_sample(a, motion, T, H, W)
    rest = render_rest(b, H, W)
    assert torch.equal(s["target"], tgt.frames) and torch.equal(s["target_joints"], tgt.joints)
    assert torch.equal(s["driving"], drv.frames) and torch.equal(s["driving_joints"], drv.joints)
    assert torch.equal(s["identity"], rest.frames[0]) and torch.equal(s["identity_joints"], rest.joints[0])
    assert torch.equal(s["expression"], drv.expression)
    # the target's joints are the motion's curves on B's skeleton
    torch.testing.assert_close(s["target_joints"], skeleton(b, motion.curves(T), H, W).joints)


def test_same_identity_pairs():
    ds = SyntheticPairs("train", num_samples=2, frames=T, size=48, seed=1, same_identity=True)
    a, b, _ = ds.parameters(0)
    s = ds[0]
    assert a is b
    assert torch.equal(s["driving"], s["target"]) and torch.equal(s["driving_joints"], s["target_joints"])
    assert torch.equal(s["identity"], render_rest(a, 48, 48).frames[0])


def test_self_pair_fraction_mixes_self_pairs_into_cross_pairs():
    plain = SyntheticPairs("train", num_samples=40, frames=T, size=48, seed=3)
    mixed = SyntheticPairs("train", num_samples=40, frames=T, size=48, seed=3, self_pair_fraction=0.5)
    flags = [mixed.is_self_pair(i) for i in range(40)]
    assert 10 <= sum(flags) <= 30  # about half, drawn per item
    i_self, i_cross = flags.index(True), flags.index(False)
    a, b, motion = mixed.parameters(i_self)
    assert a is b and (a, motion) == plain.parameters(i_self)[::2]  # same driver and motion, B replaced by A
    s = mixed[i_self]
    assert torch.equal(s["driving"], s["target"]) and torch.equal(s["identity"], render_rest(a, 48, 48).frames[0])
    assert mixed.parameters(i_cross) == plain.parameters(i_cross)  # the other items are unchanged
    assert [mixed.is_self_pair(i) for i in range(40)] == flags  # deterministic
    with pytest.raises(ValueError, match="self_pair_fraction"):
        SyntheticPairs("train", num_samples=1, self_pair_fraction=1.5)


def test_collate():
    ds = SyntheticPairs("train", num_samples=3, frames=4, size=32, seed=0)
    batch = collate_pairs([ds[0], ds[1], ds[2]])
    assert batch["driving"].shape == (3, 4, 32, 32, 3) and batch["identity_visible"].shape == (3, NUM_JOINTS)
    loader = torch.utils.data.DataLoader(ds, batch_size=2, collate_fn=collate_pairs)
    first = next(iter(loader))
    assert torch.equal(first["target"][1], ds[1]["target"])
    with pytest.raises(InputError, match="shapes"):
        collate_pairs([ds[0], SyntheticPairs("train", 1, 5, 32)[0]])
    with pytest.raises(InputError, match="keys"):
        collate_pairs([ds[0], {k: v for k, v in ds[1].items() if k != "expression"}])


# ------------------------------------------------------------------------------------------ augmentation


def _blue_sample(size: int = 96) -> dict:
    """A pair whose target/identity character has no blue, on a pure blue background."""
    b = Identity(body_color=(0.9, 0.3, 0.0), leg_color=(0.3, 0.6, 0.0), head_color=(1.0, 0.8, 0.0),
                 hair_color=(0.4, 0.2, 0.0), background=(0.0, 0.0, 1.0), center_x=0.45)
    a = Identity(torso=0.2, thigh=0.13, shin=0.13, thickness=0.035)
    motion = Motion(wave=0.8, period=8)
    drv, tgt, rest = render_sample(a, motion, 4, size, size), render_sample(b, motion, 4, size, size), render_rest(
        b, size, size)
    return {
        "driving": drv.frames, "driving_joints": drv.joints, "driving_visible": drv.visible,
        "driving_face_boxes": drv.face_boxes, "identity": rest.frames[0], "identity_joints": rest.joints[0],
        "identity_visible": rest.visible[0], "target": tgt.frames, "target_joints": tgt.joints,
        "target_visible": tgt.visible, "target_face_boxes": tgt.face_boxes, "expression": drv.expression,
        "_mask": torch.cat([rest.mask, tgt.mask]),
    }


@pytest.mark.parametrize("mode", ["crop", "pad", "scale"])
def test_augmentation_moves_joints_with_the_frames(mode):
    sample = _blue_sample()
    cfg = AugmentConfig(modes=(mode,), color_prob=0.0, padding_mode="border")
    out, params = augment_pair(sample, torch.Generator().manual_seed(7), cfg, return_params=True)
    affine = params["affine"]
    s = float(affine[0, 0])
    assert params["mode"] == mode and (s >= 1 if mode == "crop" else s <= 1 if mode == "pad" else True)
    assert torch.equal(out["driving"], sample["driving"]) and torch.equal(out["driving_joints"],
                                                                          sample["driving_joints"])
    size = sample["identity"].shape[0]
    joints = torch.cat([out["identity_joints"][None], out["target_joints"]])
    visible = torch.cat([out["identity_visible"][None], out["target_visible"]])
    assert bool(visible.any())
    # 1. the heatmap of an original joint, warped like the frames, peaks where the moved joint's heatmap does
    orig = torch.cat([sample["identity_joints"][None], sample["target_joints"]])
    orig_vis = torch.cat([sample["identity_visible"][None], sample["target_visible"]])
    hm = render_heatmaps(orig, orig_vis, (size, size), sigma=2.0)
    warped = warp_frames(hm.permute(0, 2, 3, 1), affine).permute(0, 3, 1, 2)
    peak, conf = heatmap_argmax(warped)
    moved_peak, _ = heatmap_argmax(render_heatmaps(joints, visible, (size, size), sigma=2.0 * s))
    inner = visible & (joints >= 3).all(-1) & (joints <= size - 4).all(-1) & (conf > 0.2)
    assert int(inner.sum()) > 100
    assert float((peak - moved_peak)[inner].abs().max()) <= 1.0
    assert float((peak - joints)[inner].abs().max()) <= 1.0
    # 2. the pixel at every visible moved joint shows the figure (not the blue background), and the
    #    foreground mask warped like the frames covers it
    frames = torch.cat([out["identity"][None], out["target"]])
    mask = warp_frames(sample["_mask"][..., None], affine)[..., 0]
    n, j = torch.nonzero(visible, as_tuple=True)
    xy = joints[n, j].round().long()
    assert float(mask[n, xy[:, 1], xy[:, 0]].min()) > 0.3
    body = visible & ~_is_hand(j, visible)
    n, j = torch.nonzero(body, as_tuple=True)
    xy = joints[n, j].round().long()
    assert float(frames[n, xy[:, 1], xy[:, 0], 2].max()) < 0.5
    # joints moved out of the frame are invisible
    inside = (joints >= -0.5).all(-1) & (joints[..., 0] < size - 0.5) & (joints[..., 1] < size - 0.5)
    assert not bool((visible & ~inside).any())
    torch.testing.assert_close(out["target_joints"], transform_points(sample["target_joints"], affine))


def _is_hand(j: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Boolean [N,J] of hand joints (thin fingers get blurred by resampling; they are checked via the mask)."""
    hand = torch.zeros(like.shape[-1], dtype=torch.bool)
    hand[LEFT_HAND_START:] = True
    return hand.expand_as(like)


def test_color_jitter_changes_appearance_only():
    sample = _blue_sample(64)
    cfg = AugmentConfig(geometry_prob=0.0)
    out = augment_pair(sample, torch.Generator().manual_seed(1), cfg)
    for key in ("identity_joints", "target_joints", "identity_visible", "target_visible", "target_face_boxes"):
        assert torch.equal(out[key], sample[key]), key
    assert not torch.allclose(out["target"], sample["target"]) and torch.equal(out["driving"], sample["driving"])
    assert 0 <= float(out["target"].min()) and float(out["target"].max()) <= 1
    # identity and target get the same jitter: a pixel of equal colour stays equal
    assert torch.allclose(out["identity"][0, 0], out["target"][0, 0, 0], atol=1e-5)
    jittered = augment_pair(sample, torch.Generator().manual_seed(1), AugmentConfig(jitter_driving=True))
    assert not torch.allclose(jittered["driving"], sample["driving"])
    # deterministic for a given generator state; the input is not modified
    again = augment_pair(sample, torch.Generator().manual_seed(1), cfg)
    assert all(torch.equal(out[k], again[k]) for k in PAIR_KEYS)
    assert torch.equal(sample["identity"], _blue_sample(64)["identity"])


def test_augmented_dataset():
    base = SyntheticPairs("train", num_samples=2, frames=3, size=32, seed=0)
    ds = AugmentedPairs(base, seed=5)
    a, b = ds[1], ds[1]
    assert all(torch.equal(a[k], b[k]) for k in PAIR_KEYS)
    ds.set_epoch(1)
    assert not torch.equal(ds[1]["target"], a["target"])
    assert collate_pairs([ds[0], ds[1]])["target"].shape == (2, 3, 32, 32, 3)


def test_thickness_scale_thickens_limbs_only():
    plain = SyntheticPairs("heldout", 3, frames=1, size=32, seed=9)
    thick = SyntheticPairs("heldout", 3, frames=1, size=32, seed=9, thickness_scale=2.0)
    for i in range(3):
        (a, b, m), (ta, tb, tm) = plain.parameters(i), thick.parameters(i)
        assert m == tm and a.torso == ta.torso and b.body_color == tb.body_color
        assert ta.thickness == pytest.approx(2 * a.thickness) and tb.leg_radius == pytest.approx(2 * b.leg_radius)
        assert split_of(identity_split_values(a)) == "heldout"
    item, thick_item = plain[0], thick[0]
    assert torch.equal(item["target_joints"], thick_item["target_joints"])  # same bones, wider limbs
    bg = item["identity"][0, 0]
    covered = lambda img: ((img - bg).abs().sum(-1) > 0.05).sum()  # noqa: E731
    assert covered(thick_item["identity"]) > covered(item["identity"])
    with pytest.raises(ValueError, match="thickness_scale"):
        SyntheticPairs("train", 1, thickness_scale=0)


def test_kind_weights_draw_the_families_asked_for_and_leave_other_datasets_unchanged():
    from collections import Counter

    plain = SyntheticPairs("train", 64, 2, 32, seed=5)
    weighted = SyntheticPairs("train", 64, 2, 32, seed=5, kind_weights={"wave": 3.0, "walk": 1.0})
    kinds = Counter(weighted.parameters(i)[2].kind for i in range(64))
    assert set(kinds) == {"wave", "walk"} and kinds["wave"] > 2 * kinds["walk"]
    again = SyntheticPairs("train", 64, 2, 32, seed=5, kind_weights={"wave": 3.0, "walk": 1.0})
    assert weighted.parameters(7)[2].kind == again.parameters(7)[2].kind
    # without weights the draw is the generator's own, as before the option existed
    assert {plain.parameters(i)[2].kind for i in range(64)} == {"walk", "wave", "dance", "turn"}
    a, b = plain.parameters(3)[2], weighted.parameters(3)[2]
    assert a.period == b.period and a.phase == b.phase  # the other parameters keep their draw


def test_kind_weights_must_name_kinds_with_some_weight():
    for bad in ({"jump": 1.0}, {"wave": 0.0}, {"wave": -1.0}):
        with pytest.raises(ValueError, match="kind_weights"):
            SyntheticPairs("train", 4, 2, 32, kind_weights=bad)
