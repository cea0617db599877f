"""Helpers of lab/eval.py: the per-seed spread of the ablations and the Markdown report that --write
saves. The video rows are in lab/eval_video.py, the --json file in lab/eval_json.py."""

from __future__ import annotations

import datetime
import json
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
from pathlib import Path

import torch

from im_animation_core.train.outputs import read_run_outputs, run_finished

REPO = Path(__file__).resolve().parents[1]


class Report:
    """Print each line as it comes and keep it for --write."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, text: str = "") -> None:
        print(text, flush=True)
        self.lines.append(text)

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def natural_key(path: Path) -> list:
    """Sort key: names in order with their numbers compared as numbers (seed2 before seed10)."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path.name)]


def mean_sd(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def compact(values: list[float], digits: int) -> str:
    """'0.412 / 0.398 / 0.420'"""
    return " / ".join(f"{v:.{digits}f}" for v in values)


def training_budget(variant: Path) -> str:
    """What a variant's seeds were trained for, from each run's config.json and outputs.json, e.g.
    "1500 steps of batch 8" (seeds that differ are all listed), so that rows of different budgets never pass
    for a like-for-like comparison."""
    budgets = []
    for run in sorted(variant.iterdir(), key=natural_key):
        if run_finished(run):
            step = read_run_outputs(run)["step"]
            batch = json.loads((run / "config.json").read_text())["batch_size"]
            budgets.append(f"{step} steps of batch {batch}")
    return " / ".join(dict.fromkeys(budgets))


def ablation_seed_table(variants: dict[str, dict[str, dict]]) -> list[str]:
    """The per-seed values of each ablation variant ({variant: {seed: metrics}}), one row per variant."""
    lines = ["| variant: per seed | seeds | PCK@0.05 | mean error (px) | leakage |", "|---|---|---|---|---|"]
    for name, seeds in variants.items():
        m = list(seeds.values())
        lines.append(f"| {name} | {' / '.join(seeds)} | {compact([x['pck'] for x in m], 3)} | "
                     f"{compact([x['mean_error_px'] for x in m], 2)} | {compact([x['leakage'] for x in m], 3)} |")
    return lines


def machine_facts() -> str:
    processor = platform.processor()
    if not processor:  # empty on most Linux systems: the model name of /proc/cpuinfo instead
        cpuinfo = Path("/proc/cpuinfo")
        names = re.findall(r"^model name\s*:\s*(.+)$", cpuinfo.read_text(), re.M) if cpuinfo.exists() else []
        processor = f"{names[0]} (platform.processor() is empty)" if names else "platform.processor() is empty"
    return (f"{processor}; {platform.machine()}; {os.cpu_count()} CPUs; {platform.system()} {platform.release()}; "
            f"Python {platform.python_version()}; torch {torch.__version__}")


def git_commit() -> str:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True).stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    return commit + (" (with uncommitted changes)" if git("status", "--porcelain", "--untracked-files=no") else "")


def comfyui_host() -> str:
    """The ComfyUI the video rows run in (tools.comfy_path's choice): its version and folder."""
    from tools.comfy_path import find_comfyui

    try:
        root = find_comfyui()
    except RuntimeError as e:
        return f"not found ({e})"
    version = re.search(r'__version__ = "([^"]+)"', (root / "comfyui_version.py").read_text())
    # named relative to the repository, so that a committed report holds no machine's folders
    shown = os.path.relpath(root, REPO) if root.is_absolute() else str(root)
    return f"v{version.group(1) if version else '?'} ({shown})"


def write_report(path: Path, report: Report, held_out: list[str], opening: list[str] = ()) -> None:
    """report's lines as a Markdown file, under a header: command, date, commit, machine and held-out sets, then
    the ``opening`` lines (a summary computed after the report's lines were printed)."""
    main = getattr(sys.modules["__main__"], "__spec__", None)  # run as a module (python -m lab.eval): name it so
    script = ["-m", main.name] if main and main.name else [os.path.relpath(sys.argv[0], Path.cwd())]
    command = shlex.join(["python", *script, *sys.argv[1:]])
    header = ["# IM-Animation evaluation results", "",
              f"Written by `{command}` (`make eval ARGS=\"...\"` runs the same).", "",
              f"- date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}",
              f"- commit: {git_commit()}",
              f"- machine: {machine_facts()}",
              f"- ComfyUI host of the video rows: {comfyui_host()}",
              *[f"- {line}" for line in held_out], ""]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join([*header, *opening, *([""] if opening else [])]) + "\n" + report.text())
