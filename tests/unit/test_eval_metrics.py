import torch

from im_animation_core.eval import identity_leakage, joint_accuracy, limb_ratios, psnr, ssim


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
