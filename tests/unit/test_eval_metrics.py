import pytest
import torch

from im_animation_core.eval import identity_leakage, joint_accuracy, limb_ratios, motion_correlation, psnr, ssim


def test_psnr_and_ssim():
    x = torch.rand(2, 32, 32, 3)
    assert psnr(x, x) > 90 and abs(ssim(x, x) - 1) < 1e-4
    noisy = (x + 0.1 * torch.randn_like(x)).clamp(0, 1)
    assert 15 < psnr(noisy, x) < 25 and ssim(noisy, x) < 0.95


def test_joint_accuracy_counts_only_visible_joints():
    true = torch.zeros(1, 3, 2)
    pred = torch.tensor([[[1.0, 0.0], [10.0, 0.0], [100.0, 0.0]]])
    vis = torch.tensor([[True, True, False]])
    out = joint_accuracy(pred, true, vis, torch.tensor([100.0]))
    assert out["pck"] == 0.5 and out["mean_error_px"] == 5.5


def body(arm: float, leg: float) -> torch.Tensor:
    xy = torch.zeros(1, 62, 2)
    xy[0, 1] = torch.tensor([0.0, 0.0])  # neck
    xy[0, 8], xy[0, 11] = torch.tensor([-5.0, 50.0]), torch.tensor([5.0, 50.0])  # hips
    xy[0, 2], xy[0, 5] = torch.tensor([-10.0, 0.0]), torch.tensor([10.0, 0.0])
    xy[0, 3], xy[0, 6] = xy[0, 2] + torch.tensor([0.0, arm]), xy[0, 5] + torch.tensor([0.0, arm])
    xy[0, 4], xy[0, 7] = xy[0, 3] + torch.tensor([0.0, arm]), xy[0, 6] + torch.tensor([0.0, arm])
    xy[0, 9], xy[0, 12] = xy[0, 8] + torch.tensor([0.0, leg]), xy[0, 11] + torch.tensor([0.0, leg])
    xy[0, 10], xy[0, 13] = xy[0, 9] + torch.tensor([0.0, leg]), xy[0, 12] + torch.tensor([0.0, leg])
    return xy


def test_limb_ratios_are_scale_free():
    vis = torch.ones(1, 62, dtype=torch.bool)
    r1, _ = limb_ratios(body(20, 30), vis)
    r2, _ = limb_ratios(body(20, 30) * 3, vis)
    torch.testing.assert_close(r1, r2)


def test_leakage_zero_for_identity_body_one_for_driver_body():
    vis = torch.ones(1, 62, dtype=torch.bool)
    identity, driver = body(20, 30), body(30, 45)
    assert identity_leakage(identity, vis, identity, vis, driver, vis)["leakage"] == 0.0
    assert identity_leakage(driver, vis, identity, vis, driver, vis)["leakage"] == 1.0
    half = identity_leakage(body(25, 37.5), vis, identity, vis, driver, vis)["leakage"]
    assert 0.4 < half < 0.6


def test_reference_scores_of_self_and_cross_reenactment():
    """Copying the driver's joints is exact when the driver is the identity, and carries the driver's
    proportions (leakage 1) when it is not; joint_scores ignores joints hidden in the prediction."""
    from im_animation_core.data import SyntheticPairs, collate_pairs
    from im_animation_core.eval.retarget_eval import joint_scores, pool_joints, reference_scores

    same = collate_pairs([SyntheticPairs("heldout", 2, 5, 64, 4, same_identity=True)[i] for i in range(2)])
    copy = reference_scores(same)["copy driver joints"]
    assert copy["pck"] == 1.0 and copy["mean_error_px"] == 0.0
    cross = collate_pairs([SyntheticPairs("heldout", 2, 5, 64, 4)[i] for i in range(2)])
    scores = reference_scores(cross)
    assert scores["copy driver joints"]["leakage"] == pytest.approx(1.0)
    assert scores["identity rest pose"]["leakage"] < 0.5
    true, vis = (x.flatten(0, 1) for x in pool_joints(cross["target_joints"], cross["target_visible"]))
    wrong = true + 100.0
    hidden = torch.zeros_like(vis)
    hidden[:, 0] = True  # only joint 0 is placed, and it is placed exactly
    placed = torch.where(hidden[..., None], true, wrong)
    exact = joint_scores(placed, hidden, hidden, true, vis, true, vis, 64)
    assert exact["mean_error_px"] == 0.0 and exact["pck"] == 1.0


def moving_blob(frames=8, size=24):
    """A bright disc moving left to right: [T,H,W,3] in [0,1]."""
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    centres = torch.linspace(5, size - 6, frames)
    clip = torch.stack([(-((xx - c) ** 2 + (yy - size / 2) ** 2) / 8).exp() for c in centres])
    return clip[..., None].expand(-1, -1, -1, 3).contiguous()


def test_motion_correlation_tells_a_moving_clip_from_a_still_one():
    clip = moving_blob()
    assert motion_correlation(clip, clip) == pytest.approx(1.0)
    assert motion_correlation(clip[:1].expand_as(clip), clip) == 0.0  # a still clip
    # The same motion blurred and dimmed still correlates; the motion reversed in time anti-correlates.
    blurred = 0.2 + 0.5 * torch.nn.functional.avg_pool2d(clip.movedim(-1, 1), 5, 1, 2).movedim(1, -1)
    assert motion_correlation(blurred, clip) > 0.8
    assert motion_correlation(clip.flip(0), clip) < -0.2


def test_other_driver_swaps_only_the_driving_side():
    from im_animation_core.data import SyntheticPairs
    from im_animation_core.eval.retarget_eval import OtherDriver

    data = SyntheticPairs("heldout", 3, frames=5, size=64, seed=2026)
    swapped = OtherDriver(data, 3)
    for i in range(3):
        item, own, other = swapped[i], data[i], data[(i + 1) % 3]
        for k in ("driving", "driving_joints"):
            assert torch.equal(item[k], other[k]) and not torch.equal(item[k], own[k]), k
        assert torch.equal(item["driving_visible"], other["driving_visible"])
        for k in ("identity", "target", "target_joints"):
            assert torch.equal(item[k], own[k]), k
