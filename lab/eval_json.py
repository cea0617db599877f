"""The JSON file of lab/eval.py --json: the held-out clips it drew and its figures, for scripts to read.

    {"clips": {"size", "frames", "pairs", "seed", ...},
     "video": {"rows": {ROW: {"psnr"|"ssim"|"motion_corr": {"mean", "std", "per_pair"}} or null},
               "families": {FAMILY: {"pairs": n, "rows": {FAMILY_ROW: {metric: summary}} or null[, "note"]}}}
              or null,
     "retarget": {"rows": {ROW: {"pck", "mean_error_px", "leakage"} or null}}}

Video rows (VIDEO_ROWS, then the error budget's BUDGET_ROWS), families (every motion kind of the generator, and
FAMILY_ROWS in each) and retargeting rows (RETARGET_ROWS) are fixed, so that a reader never has to guess a key; a
row that could not be computed (no trained models, the budget not run) is null, a family without pairs in the
draw says so in its "note", and every NaN (no joints to measure a leakage from, say) is null, because JSON has
no NaN. std is the population standard deviation over the pairs (im_animation_core.eval.vae_gate.summary), 0
for one pair. The budget rows: self_reenact (each pair driven by its own ground truth), sampler_2x / sampler_4x
(the result at 2x / 4x the workflow's steps), train_pairs / train_pairs_vae_ceiling (the result and the VAE
ceiling on pairs of the training distribution and seed; per_pair over those pairs); the retargeting rows
*_arms score the elbows and wrists alone, token_probe* the Stage-1 heatmap head on the driver's own pose.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from im_animation_core.eval.budget import family_summaries
from im_animation_core.eval.vae_gate import summary

VIDEO_METRICS = ("psnr", "ssim", "motion_corr")
VIDEO_ROWS = ("result", "identity_still", "driver_swap", "vae_ceiling", "still_driver", "still_clip_vae")
RETARGET_METRICS = ("pck", "mean_error_px", "leakage")
BUDGET_ROWS = ("self_reenact", "sampler_2x", "sampler_4x", "train_pairs", "train_pairs_vae_ceiling")
FAMILY_ROWS = ("result", "vae_ceiling")
RETARGET_ROWS = ("result", "driver_swap", "copy_driver", "rest_pose", "result_arms", "token_probe",
                 "token_probe_arms")


def row_summaries(per_pair: list[dict[str, dict[str, float]]], rows) -> dict[str, dict[str, dict]]:
    """per_pair: one {row: {metric: value}} per pair -> {row: {metric: summary over the pairs}}, for ``rows``."""
    return {row: {m: summary([pair[row][m] for pair in per_pair]) for m in VIDEO_METRICS} for row in rows}


def video_json(per_pair: list[dict[str, dict[str, float]]] | None, motions: list[str] | None = None,
               train_per_pair: list[dict[str, dict[str, float]]] | None = None) -> dict | None:
    """The "video" entry; None when no pair was run. motions: each pair's motion family (None: no "families");
    train_per_pair: the training pairs' rows (result, vae_ceiling), or None when they were not run."""
    if not per_pair:
        return None
    rows = row_summaries(per_pair, VIDEO_ROWS)
    for row in BUDGET_ROWS:
        rows[row] = row_summaries(per_pair, [row])[row] if all(row in p for p in per_pair) else None
    if train_per_pair:
        for row, source in (("train_pairs", "result"), ("train_pairs_vae_ceiling", "vae_ceiling")):
            rows[row] = row_summaries(train_per_pair, [source])[source]
    out = {"rows": rows}
    if motions is not None:
        out["families"] = family_summaries(per_pair, motions, FAMILY_ROWS, summary)
    return out


def retarget_json(rows: dict[str, dict[str, float] | None]) -> dict:
    """The "retarget" entry from {row: metrics with at least RETARGET_METRICS, or None}; a row missing from
    ``rows`` is null too."""
    return {"rows": {row: None if rows.get(row) is None else {m: float(rows[row][m]) for m in RETARGET_METRICS}
                     for row in RETARGET_ROWS}}


def eval_json(clips: dict, per_pair_video: list[dict] | None, retarget_rows: dict, motions: list[str] | None = None,
              train_per_pair: list[dict] | None = None) -> dict:
    """The whole file's content (NaN still in it: see dumps); the arguments as video_json and retarget_json
    take them."""
    return {"clips": dict(clips), "video": video_json(per_pair_video, motions, train_per_pair),
            "retarget": retarget_json(retarget_rows)}


def nan_to_null(obj):
    """obj with every non-finite float replaced by None (tuples become lists, as json writes them anyway)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: nan_to_null(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [nan_to_null(v) for v in obj]
    return obj


def dumps(obj) -> str:
    """Valid JSON (allow_nan=False: a NaN that escaped nan_to_null fails here, not in the reader)."""
    return json.dumps(nan_to_null(obj), indent=1, allow_nan=False) + "\n"


def write(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dumps(obj))
