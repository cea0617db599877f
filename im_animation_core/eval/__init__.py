"""Metrics with ground truth for the synthetic paired benchmark (``make eval``)."""

from .metrics import identity_leakage, joint_accuracy, limb_ratios, psnr, ssim

__all__ = ["identity_leakage", "joint_accuracy", "limb_ratios", "psnr", "ssim"]
