"""im_animation_core.eval.video_rows: a result clip and the reference rows scored against a pair's ground truth,
on clips made here."""

import pytest
import torch
import torch.nn.functional as F

from im_animation_core.eval.metrics import motion_correlation, psnr, ssim
from im_animation_core.eval.video_rows import (
    DRIVING_CLIP_ROW,
    IDENTITY_STILL_ROW,
    RESULT_ROW,
    VAE_CEILING_ROW,
    align_to,
    clip_scores,
    image_metrics,
)

pytestmark = pytest.mark.usefixtures("one_thread")
FRAMES, SIZE = 5, 16


def _pair(seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"identity": torch.rand(SIZE, SIZE, 3, generator=g),
            "driving": torch.rand(FRAMES, SIZE, SIZE, 3, generator=g),
            "target": torch.rand(FRAMES, SIZE, SIZE, 3, generator=g)}


class _LosslessVAE:
    """Stands in for a WanVAE: its round trip returns the clip unchanged."""

    def encode(self, video):
        return video

    def decode(self, latent):
        return latent


def test_align_to_leaves_a_matching_clip_alone():
    clip = torch.rand(FRAMES, SIZE, SIZE, 3)
    aligned, notes = align_to(clip, clip.clone())
    assert notes == [] and torch.equal(aligned, clip)


def test_align_to_cuts_and_resizes_saying_so():
    reference = torch.rand(FRAMES, SIZE, SIZE, 3)
    longer = torch.rand(FRAMES + 3, 2 * SIZE, 3 * SIZE, 3)
    aligned, notes = align_to(longer, reference)
    assert aligned.shape == reference.shape
    expected = F.interpolate(longer.permute(0, 3, 1, 2), size=(SIZE, SIZE), mode="area").permute(0, 2, 3, 1)
    assert torch.equal(aligned, expected[:FRAMES])
    assert notes == [f"the result has {FRAMES + 3} frames, the ground truth {FRAMES}: compared the first {FRAMES}",
                     f"the result is {3 * SIZE}x{2 * SIZE}, resized (area) to the ground truth's {SIZE}x{SIZE}"]

    shorter, notes = align_to(reference[:3], reference)
    assert shorter.shape[0] == 3 and len(notes) == 1


def test_clip_scores_are_the_three_metrics():
    a, b = torch.rand(FRAMES, SIZE, SIZE, 3), torch.rand(FRAMES, SIZE, SIZE, 3)
    assert clip_scores(a, b) == {"psnr": psnr(a, b), "ssim": ssim(a, b), "motion_corr": motion_correlation(a, b)}
    same = clip_scores(a, a)
    assert same["psnr"] >= 99 and same["ssim"] > 0.999 and same["motion_corr"] > 0.999


def test_image_metrics_rows_and_their_references():
    item = _pair()
    out = image_metrics(item, item["target"])
    assert set(out["rows"]) == {RESULT_ROW, IDENTITY_STILL_ROW, DRIVING_CLIP_ROW}  # no VAE, no ceiling row
    assert (out["frames_compared"], out["result_frames"], out["ground_truth_frames"], out["notes"]) == \
        (FRAMES, FRAMES, FRAMES, [])
    assert out["rows"][RESULT_ROW]["psnr"] >= 99 and out["rows"][RESULT_ROW]["motion_corr"] > 0.999
    assert out["rows"][IDENTITY_STILL_ROW]["motion_corr"] == 0.0  # held still: no motion to correlate
    target = item["target"]
    assert out["rows"][DRIVING_CLIP_ROW] == clip_scores(item["driving"], target)
    assert out["rows"][IDENTITY_STILL_ROW] == clip_scores(item["identity"][None].expand_as(target), target)


def test_image_metrics_scores_a_longer_result_on_the_common_frames_and_the_vae_ceiling():
    item = _pair(1)
    result = torch.cat([item["target"], torch.rand(4, SIZE, SIZE, 3)])
    out = image_metrics(item, result, vae=_LosslessVAE())
    assert (out["frames_compared"], out["result_frames"]) == (FRAMES, FRAMES + 4) and len(out["notes"]) == 1
    assert out["rows"][RESULT_ROW]["psnr"] >= 99
    ceiling = out["rows"][VAE_CEILING_ROW]
    assert ceiling["psnr"] > 60 and ceiling["motion_corr"] > 0.999
