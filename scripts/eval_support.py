"""Helpers of scripts/eval.py: cross-reenactment video metrics through the real ComfyUI pipeline (the demo
workflow run on held-out pairs by one server), the per-seed spread of the ablations, and the Markdown report
that --write saves.

The video metrics reuse scripts/demo.py (model install, the workflow's prompt, reading its output) and
scripts/demo_support.py (inputs, PSNR / SSIM against the ground truth and the two references)."""

from __future__ import annotations

import datetime
import json
import os
import platform
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import demo
import demo_support as ds
import torch
from support.media import DRIVING_NAME, IDENTITY_NAME
from support.server import ComfyServer

from im_animation_core.data import SyntheticPairs

REPO = Path(__file__).resolve().parents[1]
# The video pairs: held-out pairs 0..N-1 of this seed (the demo uses 2026, so none of them is the demo clip),
# at the demo's clip size and body shapes.
EVAL_VIDEO_SEED = 2027
VIDEO_ROWS = {"result": "IM-Animation (demo workflow)",
              "identity image held still": "identity image held still",
              "driving clip (motion on the driver's body)": "driving clip (motion on the driver's body)",
              ds.VAE_CEILING_ROW: ds.VAE_CEILING_ROW}
SKIP_NOTE = ("Cross-reenactment video metrics: SKIPPED: the trained demo models are not in models/ "
             "(make eval does not score random weights).")


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
        if (run / "outputs.json").exists():
            step = json.loads((run / "outputs.json").read_text())["step"]
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


def video_pairs(count: int) -> SyntheticPairs:
    return SyntheticPairs("heldout", count, frames=ds.DEMO_FRAMES, size=ds.DEMO_SIZE, seed=EVAL_VIDEO_SEED,
                          thickness_scale=ds.DEMO_THICKNESS_SCALE)


def write_inputs(input_dir: Path, item: dict, after: float) -> float:
    """Write the pair as the workflow's identity PNG and driving mp4 (overwriting the last pair's). LoadImage
    re-hashes its file, but LoadVideo keys its cache on the file's mtime alone: make that mtime later than
    `after` (the last pair's) so that ComfyUI runs the whole graph again. Returns the new mtime."""
    ds.write_pair_inputs(input_dir, item, IDENTITY_NAME, DRIVING_NAME)
    driving = input_dir / DRIVING_NAME
    mtime = os.path.getmtime(driving)
    if mtime < after + 1e-3:
        mtime = after + 1e-3
        os.utime(driving, (mtime, mtime))
    return mtime


def video_eval(server: ComfyServer, count: int) -> dict:
    """Run the demo workflow on held-out video pairs 0..count-1 with one server (models already in
    server.models; started and stopped here) and score each output against its ground truth. Raises when a
    pair's output is not new (ComfyUI served a cached result)."""
    from im_animation_core.wan.vae import load_wan_vae

    data = video_pairs(count)
    items = [data[i] for i in range(count)]
    vae = load_wan_vae(demo.SOURCES["vae"]).eval()
    mtime = write_inputs(server.base / "input", items[0], 0.0)  # LoadImage/LoadVideo validate the names
    pairs, seen, previous = [], set(), None
    with server:
        prompt = demo.demo_prompt(server)
        for i, item in enumerate(items):
            start = time.time()
            if i:
                mtime = write_inputs(server.base / "input", item, mtime)
            video = demo.run_prompt(server, prompt)
            result, _ = ds.read_video(video)
            if video.name in seen or (previous is not None and previous.shape == result.shape
                                      and torch.equal(previous, result)):
                raise RuntimeError(f"pair {i}: ComfyUI returned the previous pair's output ({video.name}); "
                                   "the inputs did not invalidate its cache")
            seen.add(video.name)
            previous = result
            kind = data.parameters(i)[2].kind
            pairs.append({"index": i, "motion": kind, "video": video.name, "seconds": time.time() - start,
                          "image": ds.image_metrics(item, result, vae)})
            print(f"  video pair {i + 1}/{count} ({kind}): {pairs[-1]['seconds']:.0f} s", file=sys.stderr,
                  flush=True)
    return {"count": count, "pairs": pairs}


def video_table(results: dict, weights: str) -> list[str]:
    """Markdown: mean ± stdev of PSNR / SSIM over the pairs for the result and the two references."""
    pairs, n = results["pairs"], results["count"]
    first = pairs[0]["image"]
    lines = [f"Cross-reenactment through the real ComfyUI pipeline (workflows/im_animation_demo.json, its seed "
             f"fixed): held-out pairs 0..{n - 1} of seed {EVAL_VIDEO_SEED} ({ds.DEMO_FRAMES} frames of "
             f"{ds.DEMO_SIZE}x{ds.DEMO_SIZE}, thickness_scale {ds.DEMO_THICKNESS_SCALE}); each clip against its "
             f"ground truth (the driving motion rendered on the identity's body), {first['frames_compared']} "
             f"frames compared; weights: {weights}.", ""]
    notes = sorted({note for p in pairs for note in p["image"]["notes"]})
    lines += [f"Note: {note}" for note in notes] + ([""] if notes else [])
    lines += [f"| vs ground truth, mean ± stdev over {n} pairs | PSNR (dB) | SSIM | motion correlation |",
              "|---|---|---|---|"]
    for key, label in VIDEO_ROWS.items():
        cells = [mean_sd([x["image"]["rows"][key][m] for x in pairs]) for m in ("psnr", "ssim", "motion_corr")]
        lines.append(f"| {label} | " + " | ".join(f"{v:.{d}f} ± {sd:.{d}f}"
                                                  for (v, sd), d in zip(cells, (2, 3, 3), strict=True)) + " |")
    lines += ["", "Motion correlation: the Pearson correlation of each clip's deviation from its own temporal mean "
              "with the ground truth's (`im_animation_core.eval.metrics.motion_correlation`): 1 = the same changes, "
              "0 = none (the still image scores 0).",
              "", "Per pair (result): PSNR " + compact([x["image"]["rows"]["result"]["psnr"] for x in pairs], 2)
              + "; SSIM " + compact([x["image"]["rows"]["result"]["ssim"] for x in pairs], 3)
              + "; motion correlation " + compact([x["image"]["rows"]["result"]["motion_corr"] for x in pairs], 3)
              + "; motions " + " / ".join(x["motion"] for x in pairs)
              + f"; {statistics.mean(x['seconds'] for x in pairs):.0f} s per pair."]
    return lines


def video_section(count: int, base: Path) -> list[str]:
    """The video metrics with the trained demo models on a fresh server under base, or the line saying why
    they are skipped."""
    shutil.rmtree(base, ignore_errors=True)
    server = ComfyServer(base=base)
    if not demo.install_models(server.models):
        missing = [str(p.relative_to(REPO)) for p in demo.SOURCES.values() if not p.is_file()]
        return [SKIP_NOTE, f"(missing: {', '.join(missing)})"]
    return video_table(video_eval(server, count), "trained demo models (models/)")


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


def write_report(path: Path, report: Report, held_out: list[str]) -> None:
    """report's lines as a Markdown file, under a header: command, date, commit, machine and held-out sets."""
    command = shlex.join(["python", os.path.relpath(sys.argv[0], Path.cwd()), *sys.argv[1:]])
    header = ["# IM-Animation evaluation results", "",
              f"Written by `{command}` (`make eval ARGS=\"...\"` runs the same).", "",
              f"- date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}",
              f"- commit: {git_commit()}",
              f"- machine: {machine_facts()}",
              *[f"- {line}" for line in held_out], ""]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(header) + "\n" + report.text())
