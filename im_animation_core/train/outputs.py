"""A training run's ``outputs.json``: what a finished stage exported, the one record that readers of a run use.

The trainer writes it in the run's output folder once the stage's files are exported, so its presence marks
a finished run. Content: {"stage": the stage's name, "step": the last training step, "files": {key: file
name relative to the run folder}} (the keys are the stage's, stages.py: e.g. "modules", "motion_tokenizer",
"conv_motion_encoder", "dit", "heatmap_head").
"""

from __future__ import annotations

import json
import os
from pathlib import Path

OUTPUTS_NAME = "outputs.json"


def outputs_path(run_dir: str | os.PathLike) -> Path:
    """The path of run_dir's outputs.json (which may not exist yet)."""
    return Path(run_dir) / OUTPUTS_NAME


def write_run_outputs(run_dir: str | os.PathLike, stage: str, step: int, files: dict[str, str]) -> None:
    """Record a finished stage's exported files (names relative to run_dir) and its last step."""
    outputs_path(run_dir).write_text(json.dumps({"stage": stage, "step": step, "files": files}, indent=2),
                                     encoding="utf-8")


def run_finished(run_dir: str | os.PathLike) -> bool:
    """Whether run_dir holds a finished run (its outputs.json exists)."""
    return outputs_path(run_dir).exists()


def read_run_outputs(run_dir: str | os.PathLike) -> dict:
    """run_dir's outputs.json as written by write_run_outputs: {"stage", "step", "files"}."""
    return json.loads(outputs_path(run_dir).read_text(encoding="utf-8"))


def run_file(run_dir: str | os.PathLike, key: str) -> Path:
    """The path of the file a finished run exported under key; KeyError naming the run when it has none."""
    files = read_run_outputs(run_dir)["files"]
    if key not in files:
        raise KeyError(f"the run {run_dir} exported no '{key}' (it has: {', '.join(files) or 'none'})")
    return Path(run_dir) / files[key]
