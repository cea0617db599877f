"""Image metrics of a result clip against the ground truth of a synthetic pair, with the reference rows that
make them readable (``make demo``, ``make eval``).

Every clip is [T,H,W,3] float in [0,1]; a pair is a SyntheticPairs item (keys in its docstring: "target" is
the ground truth, the driver's motion on the identity's body). A row scores one clip against the ground truth
with PSNR (dB), SSIM and motion correlation (``metrics.py``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .metrics import motion_correlation, psnr, ssim
from .vae_gate import vae_round_trip

RESULT_ROW = "result"
IDENTITY_STILL_ROW = "identity image held still"
DRIVING_CLIP_ROW = "driving clip (motion on the driver's body)"
VAE_CEILING_ROW = "ground truth through the VAE (the best any DiT could do)"


def align_to(clip: torch.Tensor, reference: torch.Tensor) -> tuple[torch.Tensor, list[str]]:
    """clip cut to the reference's frame count and resized (area) to its size when they differ, so that a
    workflow output of another length or size can still be scored; notes say what was changed."""
    n = min(clip.shape[0], reference.shape[0])
    notes = []
    if clip.shape[0] != reference.shape[0]:
        notes.append(f"the result has {clip.shape[0]} frames, the ground truth {reference.shape[0]}: "
                     f"compared the first {n}")
    if clip.shape[1:3] != reference.shape[1:3]:
        notes.append(f"the result is {clip.shape[2]}x{clip.shape[1]}, resized (area) to the ground "
                     f"truth's {reference.shape[2]}x{reference.shape[1]}")
        clip = F.interpolate(clip.permute(0, 3, 1, 2), size=tuple(reference.shape[1:3]),
                             mode="area").permute(0, 2, 3, 1)
    return clip[:n], notes


def clip_scores(clip: torch.Tensor, reference: torch.Tensor) -> dict[str, float]:
    """{"psnr", "ssim", "motion_corr"} of a clip against a reference of the same frames."""
    return {"psnr": psnr(clip.float(), reference), "ssim": ssim(clip.float(), reference),
            "motion_corr": motion_correlation(clip.float(), reference)}


def image_metrics(item: dict, result: torch.Tensor, vae=None) -> dict:
    """Scores against the pair's ground truth of the result (aligned with align_to) and of references: the
    identity image held still (no motion at all), the driving clip itself (the motion on the wrong body) and,
    given the VAE (a core ``wan.vae.WanVAE``, the workflow's weights), the ground truth through it.

    Returns {"frames_compared", "result_frames", "ground_truth_frames", "notes" (align_to's), "rows": {row
    name: clip_scores}}, rows named RESULT_ROW, IDENTITY_STILL_ROW, DRIVING_CLIP_ROW and VAE_CEILING_ROW."""
    target = item["target"].float()
    aligned, notes = align_to(result.float(), target)
    n = aligned.shape[0]
    gt = target[:n]
    rows = {RESULT_ROW: aligned, IDENTITY_STILL_ROW: item["identity"][None].expand_as(gt),
            DRIVING_CLIP_ROW: item["driving"][:n]}
    if vae is not None:
        rows[VAE_CEILING_ROW] = vae_round_trip(vae, target)[:n]
    return {"frames_compared": n, "result_frames": int(result.shape[0]), "ground_truth_frames": int(target.shape[0]),
            "notes": notes, "rows": {name: clip_scores(x, gt) for name, x in rows.items()}}
