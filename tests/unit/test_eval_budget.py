"""The error budget of make eval: its terms are read off the JSON's rows as documented, the pipeline terms and
the family terms each add up to the gap, and rows that were not run give empty cells, not NaN."""

import math

import pytest

from im_animation_core.eval.budget import ARM_JOINTS, budget_table, budget_terms
from im_animation_core.keypoints import JOINT_NAMES


def _row(mc: float) -> dict:
    return {"psnr": {"mean": 20.0}, "ssim": {"mean": 0.8}, "motion_corr": {"mean": mc}}


def _video(**means) -> dict:
    values = {"result": 0.35, "vae_ceiling": 0.70, "self_reenact": 0.31, "sampler_2x": 0.36, "sampler_4x": 0.40,
              "train_pairs": 0.50, "train_pairs_vae_ceiling": 0.80, **means}
    families = {"walk": {"pairs": 2, "rows": {"result": _row(0.5), "vae_ceiling": _row(0.8)}},
                "wave": {"pairs": 2, "rows": {"result": _row(0.1), "vae_ceiling": _row(0.6)}},
                "turn": {"pairs": 0, "rows": None, "note": "no pairs of this family in the draw"}}
    return {"rows": {k: None if v is None else _row(v) for k, v in values.items()}, "families": families}


RETARGET = {"rows": {"result": {"pck": 0.77}, "result_arms": {"pck": 0.61}, "token_probe": {"pck": 0.55},
                     "token_probe_arms": {"pck": 0.57}}}


def _terms(video) -> dict[str, dict]:
    return {t["term"].split(" (")[0]: t for t in budget_terms(video, RETARGET)}


def test_the_pipeline_terms_add_up_to_the_gap_and_their_shares_to_one():
    terms = _terms(_video())
    gap = terms["the gap: VAE ceiling - result"]
    assert gap["figure"] == pytest.approx(0.35) and gap["share"] == pytest.approx(1.0)
    cross = terms["retargeting across bodies"]
    rest = terms["the self-driven pipeline: tokens, motion maps, DiT"]
    assert cross["figure"] == pytest.approx(-0.04)  # the self-driven result is lower: retargeting costs nothing
    assert rest["figure"] == pytest.approx(0.39)
    assert cross["share"] + rest["share"] == pytest.approx(1.0)


def test_sampler_seen_unseen_and_vae_terms():
    terms = _terms(_video())
    assert terms["the sampler"]["figure"] == pytest.approx(0.05)  # the better of 2x and 4x
    assert terms["the sampler"]["share"] == pytest.approx(0.05 / 0.35)
    # 0.5 / 0.8 of the ceiling on training pairs against 0.35 / 0.7 on held-out pairs, in held-out units
    assert terms["unseen clips"]["figure"] == pytest.approx((0.625 - 0.5) * 0.7)
    vae = terms["the VAE itself"]
    assert vae["figure"] == pytest.approx(0.30) and vae["share"] is None


def test_family_terms_weight_each_family_by_its_pairs():
    terms = _terms(_video())
    walk, wave = terms["the walk pairs"], terms["the wave pairs"]
    assert walk["figure"] == pytest.approx(2 / 4 * 0.3) and wave["figure"] == pytest.approx(2 / 4 * 0.5)
    assert terms["the turn pairs"]["figure"] is None and "no pairs" in terms["the turn pairs"]["measured"]


def test_rows_not_run_give_empty_cells_not_nan():
    video = _video(self_reenact=None, sampler_2x=None, sampler_4x=None, train_pairs=None,
                   train_pairs_vae_ceiling=None)
    terms = _terms(video)
    for name in ("retargeting across bodies", "the sampler", "unseen clips"):
        assert terms[name]["figure"] is None and terms[name]["share"] is None, name
    table = "\n".join(budget_table(video, RETARGET))
    assert "nan" not in table.lower()
    assert budget_table(None, RETARGET) == ["No error budget: the video rows were not run."]


def test_the_token_rows_name_both_pcks_and_the_arms_are_elbows_and_wrists():
    table = "\n".join(budget_table(_video(), RETARGET))
    assert "all joints 0.550, arms (elbows, wrists) 0.570" in table
    assert "all joints 0.770, arms (elbows, wrists) 0.610" in table
    assert sorted(JOINT_NAMES[j] for j in ARM_JOINTS) == ["left_elbow", "left_wrist", "right_elbow", "right_wrist"]
    assert not math.isnan(budget_terms(_video(), RETARGET)[0]["figure"])
