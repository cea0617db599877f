"""Reconstruction, joint and identity-leakage metrics.

Identity leakage asks whether the animated body has the identity's proportions or the driver's. Body
proportions are measured as limb lengths divided by the body's scale (neck-to-hip distance), from joints;
leakage = d_identity / (d_identity + d_driver), where d_x is the mean absolute difference between the
measured ratios and x's true ratios: 0 = the identity's body exactly, 1 = the driver's, 0.5 = no better
than halfway.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# (a, b) joint pairs of the limbs whose lengths describe a body: upper arms, forearms, thighs, shins, shoulders.
PROPORTION_LIMBS = ((2, 3), (3, 4), (5, 6), (6, 7), (8, 9), (9, 10), (11, 12), (12, 13), (1, 2), (1, 5))
_NECK, _RHIP, _LHIP = 1, 8, 11


def psnr(pred: torch.Tensor, target: torch.Tensor) -> float:
    """pred, target: [...,H,W,3] float in [0,1]. Peak signal-to-noise ratio in dB over all pixels."""
    mse = F.mse_loss(pred.float(), target.float()).clamp(min=1e-10)
    return float(10 * torch.log10(1.0 / mse))


def ssim(pred: torch.Tensor, target: torch.Tensor, window: int = 7) -> float:
    """pred, target: [N,H,W,3] float in [0,1]. Mean structural similarity (Gaussian window, sigma 1.5)."""
    import kornia

    p, t = pred.float().movedim(-1, 1), target.float().movedim(-1, 1)
    return float(kornia.metrics.ssim(p, t, window).mean())


def motion_correlation(pred: torch.Tensor, target: torch.Tensor) -> float:
    """pred, target: [T,H,W,3] float in [0,1], the same frames. Does pred move where and when target moves?

    The Pearson correlation, over all frames and pixels, of each clip's deviation from its own temporal
    mean: 1 = the same changes, 0 = unrelated ones or none (a still clip scores 0), negative = opposite.
    PSNR cannot tell a still image from a blurred moving one; this can."""
    a = pred.float() - pred.float().mean(0, keepdim=True)
    b = target.float() - target.float().mean(0, keepdim=True)
    if min(float(a.pow(2).mean()), float(b.pow(2).mean())) < 1e-10:  # still, to float rounding
        return 0.0
    return float((a * b).sum() / (a.norm() * b.norm()))


def joint_accuracy(pred: torch.Tensor, true: torch.Tensor, visible: torch.Tensor, scale: torch.Tensor,
                   threshold: float = 0.05) -> dict[str, float]:
    """pred, true: [N,J,2] pixels; visible: [N,J] bool; scale: [N] pixels (the image's longer side).
    PCK@threshold: share of visible joints within threshold * scale; mean error in pixels."""
    err = (pred.float() - true.float()).norm(dim=-1)
    vis = visible.bool()
    if not vis.any():
        return {"pck": float("nan"), "mean_error_px": float("nan")}
    ok = err <= threshold * scale.float()[:, None]
    return {"pck": float(ok[vis].float().mean()), "mean_error_px": float(err[vis].mean())}


def limb_ratios(xy: torch.Tensor, visible: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """xy: [N,J,2]; visible: [N,J]. Returns ratios [N,L] of PROPORTION_LIMBS lengths to the neck-hip
    distance and their validity [N,L] (both ends and the scale joints visible)."""
    a = torch.tensor([p[0] for p in PROPORTION_LIMBS])
    b = torch.tensor([p[1] for p in PROPORTION_LIMBS])
    lengths = (xy[:, a] - xy[:, b]).norm(dim=-1)
    hips = (xy[:, _RHIP] + xy[:, _LHIP]) / 2
    scale = (xy[:, _NECK] - hips).norm(dim=-1, keepdim=True).clamp(min=1e-6)
    valid = visible[:, a] & visible[:, b] & (visible[:, _NECK] & visible[:, _RHIP] & visible[:, _LHIP])[:, None]
    return lengths / scale, valid


def identity_leakage(pred_xy: torch.Tensor, pred_visible: torch.Tensor, identity_xy: torch.Tensor,
                     identity_visible: torch.Tensor, driver_xy: torch.Tensor,
                     driver_visible: torch.Tensor) -> dict[str, float]:
    """All [N,J,2] / [N,J]: the retargeted (predicted) joints, the identity's true joints in the same frames
    and the driver's. Proportions are per frame, so poses that foreshorten limbs affect all three alike."""
    r_pred, v_pred = limb_ratios(pred_xy, pred_visible)
    r_id, v_id = limb_ratios(identity_xy, identity_visible)
    r_dr, v_dr = limb_ratios(driver_xy, driver_visible)
    valid = v_pred & v_id & v_dr
    if not valid.any():
        return {"d_identity": float("nan"), "d_driver": float("nan"), "leakage": float("nan")}
    d_id = float((r_pred - r_id).abs()[valid].mean())
    d_dr = float((r_pred - r_dr).abs()[valid].mean())
    return {"d_identity": d_id, "d_driver": d_dr, "leakage": d_id / max(d_id + d_dr, 1e-12)}
