"""Metrics with ground truth for the synthetic paired benchmark (``make eval``), and side-by-side strips."""

from .metrics import identity_leakage, joint_accuracy, limb_ratios, motion_correlation, psnr, ssim
from .strip import contact_sheet, side_by_side

__all__ = ["contact_sheet", "identity_leakage", "joint_accuracy", "limb_ratios", "motion_correlation", "psnr",
           "side_by_side", "ssim"]
