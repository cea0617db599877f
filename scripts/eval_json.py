"""The JSON file of scripts/eval.py --json: the held-out clips it drew and its figures, for scripts to read.

    {"clips": {"size", "frames", "pairs", "seed", ...},
     "video": {"rows": {ROW: {"psnr"|"ssim"|"motion_corr": {"mean", "std", "per_pair"}}}} or null,
     "retarget": {"rows": {ROW: {"pck", "mean_error_px", "leakage"} or null}}}

Video rows (VIDEO_ROWS) and retargeting rows (RETARGET_ROWS) are fixed, so that a reader never has to guess
a key; a row that could not be computed (no trained models) is null, and so is every NaN (no joints to
measure a leakage from, say), because JSON has no NaN. std is the population standard deviation over the
pairs (im_animation_core.eval.vae_gate.summary), 0 for one pair.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from im_animation_core.eval.vae_gate import summary

VIDEO_METRICS = ("psnr", "ssim", "motion_corr")
VIDEO_ROWS = ("result", "identity_still", "driver_swap", "vae_ceiling", "still_driver", "still_clip_vae")
RETARGET_METRICS = ("pck", "mean_error_px", "leakage")
RETARGET_ROWS = ("result", "driver_swap", "copy_driver", "rest_pose")


def row_summaries(per_pair: list[dict[str, dict[str, float]]], rows) -> dict[str, dict[str, dict]]:
    """per_pair: one {row: {metric: value}} per pair -> {row: {metric: summary over the pairs}}, for ``rows``."""
    return {row: {m: summary([pair[row][m] for pair in per_pair]) for m in VIDEO_METRICS} for row in rows}


def video_json(per_pair: list[dict[str, dict[str, float]]] | None) -> dict | None:
    """The "video" entry; None when no pair was run."""
    return {"rows": row_summaries(per_pair, VIDEO_ROWS)} if per_pair else None


def retarget_json(rows: dict[str, dict[str, float] | None]) -> dict:
    """The "retarget" entry from {row: metrics with at least RETARGET_METRICS, or None}; a row missing from
    ``rows`` is null too."""
    return {"rows": {row: None if rows.get(row) is None else {m: float(rows[row][m]) for m in RETARGET_METRICS}
                     for row in RETARGET_ROWS}}


def eval_json(clips: dict, per_pair_video: list[dict] | None, retarget_rows: dict) -> dict:
    """The whole file's content (NaN still in it: see dumps)."""
    return {"clips": dict(clips), "video": video_json(per_pair_video), "retarget": retarget_json(retarget_rows)}


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
