"""lab/eval.py --json: the file other scripts read. Its keys are fixed whatever was computed, its means
and stds are those of the per-pair values, and it is valid JSON even when a metric is NaN."""

import json
import math

import pytest
import torch

from lab import eval_json as ej

# Spelled out rather than read from eval_json, so that renaming a key there fails here.
VIDEO_ROWS = {"result", "identity_still", "driver_swap", "vae_ceiling", "still_driver", "still_clip_vae"}
BUDGET_ROWS = {"self_reenact", "sampler_2x", "sampler_4x", "train_pairs", "train_pairs_vae_ceiling"}
FAMILIES = {"walk", "wave", "dance", "turn"}
RETARGET_ROWS = {"result", "driver_swap", "copy_driver", "rest_pose", "result_arms", "token_probe",
                 "token_probe_arms"}
SUMMARY_KEYS = {"mean", "std", "per_pair"}


def _pair(k: float) -> dict:
    """One pair's rows with distinct values per row and metric, and a Markdown-only row."""
    rows = {row: {"psnr": 20.0 + k + i, "ssim": 0.5 + k / 10 + i / 100, "motion_corr": k / 4 - i / 10}
            for i, row in enumerate(sorted(VIDEO_ROWS))}
    rows["driving_clip"] = {"psnr": 9.0, "ssim": 0.3, "motion_corr": 0.0}
    return rows


def _retarget(pck: float) -> dict:
    return {"pck": pck, "mean_error_px": 3.0, "leakage": 0.4, "d_identity": 0.07, "d_driver": 0.1}


def _file(per_pair, retarget=None) -> dict:
    clips = {"size": 64, "frames": 17, "pairs": len(per_pair or []), "seed": 11}
    retarget = retarget or {row: _retarget(0.5) for row in RETARGET_ROWS}
    return json.loads(ej.dumps(ej.eval_json(clips, per_pair, retarget)))


def test_the_file_has_exactly_the_documented_structure():
    data = _file([_pair(0), _pair(1), _pair(3)])
    assert set(data) == {"clips", "video", "retarget"}
    assert {"size", "frames", "pairs", "seed"} <= set(data["clips"])
    assert set(data["video"]) == {"rows"}
    assert set(data["video"]["rows"]) == VIDEO_ROWS | BUDGET_ROWS  # driving_clip stays in the Markdown
    assert all(data["video"]["rows"][row] is None for row in BUDGET_ROWS)  # the budget was not run
    for metrics in (data["video"]["rows"][row] for row in VIDEO_ROWS):
        assert set(metrics) == {"psnr", "ssim", "motion_corr"}
        for s in metrics.values():
            assert set(s) == SUMMARY_KEYS and len(s["per_pair"]) == 3
    assert set(data["retarget"]) == {"rows"}
    assert set(data["retarget"]["rows"]) == RETARGET_ROWS
    for metrics in data["retarget"]["rows"].values():
        assert set(metrics) == {"pck", "mean_error_px", "leakage"}
        assert all(isinstance(v, float) for v in metrics.values())


def test_means_and_stds_are_those_of_the_per_pair_values_in_pair_order():
    pairs = [_pair(0), _pair(1), _pair(3)]
    rows = _file(pairs)["video"]["rows"]
    for row in VIDEO_ROWS:
        for metric in ("psnr", "ssim", "motion_corr"):
            values = [p[row][metric] for p in pairs]
            mean = sum(values) / 3
            s = rows[row][metric]
            assert s["per_pair"] == pytest.approx(values)
            assert s["mean"] == pytest.approx(mean)
            # population std: the spread of these pairs, not an estimate for other draws
            assert s["std"] == pytest.approx(math.sqrt(sum((v - mean) ** 2 for v in values) / 3))
    assert rows["result"]["psnr"]["mean"] == pytest.approx(70 / 3)  # (22 + 23 + 25) / 3: "result" sorts third


def test_nan_is_written_as_null_and_the_file_stays_strict_json():
    pairs = [_pair(0), _pair(1)]
    pairs[1]["still_driver"]["motion_corr"] = float("nan")
    retarget = {row: _retarget(0.5) for row in RETARGET_ROWS}
    retarget["copy_driver"]["leakage"] = float("nan")
    clips = {"size": 64, "frames": 17, "pairs": 2, "seed": 11}
    text = ej.dumps(ej.eval_json(clips, pairs, retarget))
    assert "NaN" not in text

    def no_constants(name):
        raise AssertionError(f"{name} in the file")

    data = json.loads(text, parse_constant=no_constants)
    still = data["video"]["rows"]["still_driver"]["motion_corr"]
    assert still["per_pair"][1] is None and still["mean"] is None and still["std"] is None
    assert data["video"]["rows"]["still_driver"]["psnr"]["mean"] is not None
    assert data["retarget"]["rows"]["copy_driver"]["leakage"] is None
    assert data["retarget"]["rows"]["copy_driver"]["pck"] == 0.5


def test_rows_not_computed_are_null_and_keep_their_keys():
    data = _file(None, {"copy_driver": _retarget(0.1), "rest_pose": _retarget(0.5)})
    assert data["video"] is None  # --pairs 0, or no trained models
    assert set(data["retarget"]["rows"]) == RETARGET_ROWS
    assert data["retarget"]["rows"]["result"] is None and data["retarget"]["rows"]["driver_swap"] is None
    assert data["retarget"]["rows"]["copy_driver"]["pck"] == pytest.approx(0.1)


def test_one_pair_has_std_zero():
    s = _file([_pair(2)])["video"]["rows"]["vae_ceiling"]["ssim"]
    assert s["std"] == 0.0 and s["per_pair"] == [s["mean"]]


def test_infinities_tuples_and_tensor_scalars_become_plain_json():
    obj = ej.nan_to_null({"a": (1.0, float("inf")), "b": [float("-inf"), 2], "c": "x"})
    assert obj == {"a": [1.0, None], "b": [None, 2], "c": "x"}
    assert ej.retarget_json({"result": {k: torch.tensor(0.25) for k in ("pck", "mean_error_px", "leakage")}})[
        "rows"]["result"] == {"pck": 0.25, "mean_error_px": 0.25, "leakage": 0.25}


def _budget_pair(k: float) -> dict:
    rows = _pair(k)
    for i, row in enumerate(("self_reenact", "sampler_2x", "sampler_4x")):
        rows[row] = {"psnr": 21.0 + k, "ssim": 0.6, "motion_corr": k / 5 + i / 50}
    return rows


def test_budget_rows_families_and_training_pairs_are_summarised_over_their_own_pairs():
    pairs = [_budget_pair(0), _budget_pair(1), _budget_pair(2)]
    train = [{"result": {"psnr": 25.0, "ssim": 0.9, "motion_corr": v},
              "vae_ceiling": {"psnr": 26.0, "ssim": 0.9, "motion_corr": 0.8}} for v in (0.5, 0.7)]
    clips = {"size": 64, "frames": 17, "pairs": 3, "seed": 11}
    retarget = {row: _retarget(0.5) for row in RETARGET_ROWS}
    data = json.loads(ej.dumps(ej.eval_json(clips, pairs, retarget, ["wave", "walk", "wave"], train)))
    rows = data["video"]["rows"]
    assert rows["self_reenact"]["motion_corr"]["per_pair"] == pytest.approx([0.0, 0.2, 0.4])
    assert rows["sampler_4x"]["motion_corr"]["mean"] == pytest.approx(0.2 + 2 / 50)
    assert rows["train_pairs"]["motion_corr"]["per_pair"] == pytest.approx([0.5, 0.7])
    assert rows["train_pairs_vae_ceiling"]["motion_corr"]["mean"] == pytest.approx(0.8)
    families = data["video"]["families"]
    assert set(families) == FAMILIES
    wave = families["wave"]
    assert wave["pairs"] == 2
    assert set(wave["rows"]) == {"result", "vae_ceiling"}
    assert wave["rows"]["result"]["psnr"]["per_pair"] == pytest.approx([pairs[0]["result"]["psnr"],
                                                                         pairs[2]["result"]["psnr"]])
    assert families["walk"]["pairs"] == 1
    for empty in ("dance", "turn"):  # no pairs of these in the draw: said so, never a NaN
        assert families[empty] == {"pairs": 0, "rows": None, "note": "no pairs of this family in the draw"}


def test_a_family_outside_the_generators_kinds_gets_its_own_entry():
    pairs = [_pair(0), _pair(1)]
    retarget = {row: _retarget(0.5) for row in RETARGET_ROWS}
    data = json.loads(ej.dumps(ej.eval_json({"pairs": 2}, pairs, retarget, ["jump", "walk"])))
    assert set(data["video"]["families"]) == FAMILIES | {"jump"}
    assert data["video"]["families"]["jump"]["pairs"] == 1
