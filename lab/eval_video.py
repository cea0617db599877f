"""The video rows of lab/eval.py: the demo workflow run through the real ComfyUI server on held-out pairs.

Each pair (an identity and a driving clip, with the ground truth: the driver's motion on the identity's body)
goes through workflows/im_animation_demo.json three times, one server for all:

- result: with its own driving clip, scored against its ground truth;
- driver_swap: with pair (i+1) mod N's driving clip, scored against pair i's own ground truth, so a model
  that follows the driver loses motion correlation here (the control of the result row);
- still_driver: with the identity image as every driving frame, scored against the identity held still: a
  still driver should give sharp still frames.

With the error budget (budget=True, make eval's default), three more runs per pair and one run per training pair:

- self_reenact: driven by its own ground truth (the identity's own body making the motion), so retargeting
  across bodies and leakage drop out;
- sampler_2x, sampler_4x: the result's inputs at 2x and 4x the workflow's KSampler steps;
- train_pairs: pairs 0..N-1 of the demo set's last training phase (its split, seed and domain, read from its
  run record), each with its own driving clip: the result row on clips the DiT was trained on.

References, without the workflow: the identity image held still and the driving clip (against the ground
truth), the ground truth through the VAE (vae_ceiling, the best any DiT decoding through it could do) and the
still clip through the VAE (still_clip_vae, the same ceiling for still_driver).

Reuses tools/demo.py (model install, the workflow's prompt, finding its output), tools/demo_support.py
(the demo clip's sizes, writing the inputs) and im_animation_core.eval.video_rows (the scores)."""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

import torch

from im_animation_core.data import SyntheticPairs
from im_animation_core.eval.vae_gate import vae_round_trip
from im_animation_core.eval.video_rows import (
    DRIVING_CLIP_ROW,
    IDENTITY_STILL_ROW,
    RESULT_ROW,
    VAE_CEILING_ROW,
    align_to,
    clip_scores,
    image_metrics,
)
from im_animation_core.video import read_video
from lab import DEMO_RECORDS
from lab import eval_json as ej
from tools import demo
from tools import demo_support as ds
from tools.media import DRIVING_NAME, IDENTITY_NAME
from tools.server import ComfyServer

REPO = Path(__file__).resolve().parents[1]
# The default video pairs: held-out pairs 0..N-1 of this seed (the demo uses 2026, so none of them is the demo
# clip), at the demo's clip size and body shapes.
EVAL_VIDEO_SEED = 2027
WORKFLOW_RUNS = ("result", "driver_swap", "still_driver")
BUDGET_RUNS = ("self_reenact", "sampler_2x", "sampler_4x")
STEP_FACTORS = {"sampler_2x": 2, "sampler_4x": 4}
# The order of a pair's runs: those on the pair's own inputs one after another, so that their input files are
# written once (WorkflowRunner).
RUN_ORDER = ("result", "sampler_2x", "sampler_4x", "driver_swap", "still_driver", "self_reenact")
# The Markdown tables' rows (JSON key: label), by the reference they are scored against. driving_clip is
# in the Markdown only: the JSON keeps to eval_json.VIDEO_ROWS.
VS_GROUND_TRUTH = {"result": "IM-Animation (demo workflow)",
                   "driver_swap": "the same, each pair given another pair's driving clip (control: a model "
                                  "that follows the driver loses motion correlation here)",
                   "identity_still": "identity image held still",
                   "driving_clip": "driving clip (motion on the driver's body)",
                   "vae_ceiling": VAE_CEILING_ROW}
BUDGET_LABELS = {"self_reenact": "each pair driven by its own ground truth (the identity's own body making the "
                                 "motion: no retargeting across bodies)",
                 "sampler_2x": "the result at 2x the workflow's sampler steps",
                 "sampler_4x": "the result at 4x the workflow's sampler steps"}
TRAIN_LABELS = {"train_pairs": "IM-Animation on training pairs (clips the DiT was trained on)",
                "train_pairs_vae_ceiling": "their ground truth through the VAE"}
VS_IDENTITY_STILL = {"still_driver": "IM-Animation with the identity image as a still driver",
                     "still_clip_vae": "the identity held still through the VAE (the best a still driver could give)"}
SKIP_NOTE = ("Cross-reenactment video metrics: SKIPPED: the trained demo models are not in models/ "
             "(make eval does not score random weights).")


def video_pairs(count: int, seed: int = EVAL_VIDEO_SEED) -> SyntheticPairs:
    return ds.demo_pairs("heldout", count, seed)


def still_clip(item: dict) -> torch.Tensor:
    """The identity image repeated for every frame of the pair's clip."""
    return item["identity"][None].expand(item["driving"].shape[0], -1, -1, -1).contiguous()


def workflow_inputs(items: list[dict], i: int) -> dict[str, dict]:
    """The workflow's inputs (identity, driving) for each of WORKFLOW_RUNS of pair i."""
    item = items[i]
    return {"result": item,
            "driver_swap": {"identity": item["identity"], "driving": items[(i + 1) % len(items)]["driving"]},
            "still_driver": {"identity": item["identity"], "driving": still_clip(item)}}


def budget_inputs(item: dict) -> dict[str, dict]:
    """The workflow's inputs for each of BUDGET_RUNS of a pair: its ground truth as the driver for self_reenact,
    the pair itself for the sampler rows (their prompt differs: with_steps)."""
    return {"self_reenact": {"identity": item["identity"], "driving": item["target"]},
            "sampler_2x": item, "sampler_4x": item}


def with_steps(prompt: dict, factor: int) -> dict:
    """The prompt with its KSampler's steps multiplied by ``factor``."""
    p = json.loads(json.dumps(prompt))
    sampler = next(k for k, n in p.items() if n["class_type"] == "KSampler")
    p[sampler]["inputs"]["steps"] = int(p[sampler]["inputs"]["steps"]) * factor
    return p


def pair_scores(item: dict, outputs: dict[str, torch.Tensor], vae) -> tuple[dict[str, dict[str, float]], list[str]]:
    """{row: {"psnr", "ssim", "motion_corr"}} of one pair for every row of VS_GROUND_TRUTH and
    VS_IDENTITY_STILL, and of each BUDGET_RUNS row whose output is given (against the ground truth), from the
    workflow's outputs per WORKFLOW_RUNS (and BUDGET_RUNS) key; and notes on outputs that had to be cut or
    resized to be compared."""
    base = image_metrics(item, outputs["result"], vae)
    rows = {"result": base["rows"][RESULT_ROW],
            "identity_still": base["rows"][IDENTITY_STILL_ROW],
            "driving_clip": base["rows"][DRIVING_CLIP_ROW],
            "vae_ceiling": base["rows"][VAE_CEILING_ROW]}
    notes = list(base["notes"])
    target = item["target"].float()
    still = still_clip(item).float()
    references = [("driver_swap", target), ("still_driver", still),
                  *((key, target) for key in BUDGET_RUNS if key in outputs)]
    for key, reference in references:
        aligned, more = align_to(outputs[key].float(), reference)
        rows[key] = clip_scores(aligned, reference[:aligned.shape[0]])
        notes += [f"{key}: {note}" for note in more]
    rows["still_clip_vae"] = clip_scores(vae_round_trip(vae, still), still)
    return rows, notes


def write_inputs(input_dir: Path, item: dict, after: float) -> float:
    """Write identity and driving clip as the workflow's identity PNG and driving mp4 (overwriting the last
    run's). LoadImage re-hashes its file, but LoadVideo keys its cache on the file's mtime alone: make that
    mtime later than `after` (the last run's) so that ComfyUI runs the whole graph again. Returns the new
    mtime."""
    ds.write_pair_inputs(input_dir, item, IDENTITY_NAME, DRIVING_NAME)
    driving = input_dir / DRIVING_NAME
    mtime = os.path.getmtime(driving)
    if mtime < after + 1e-3:
        mtime = after + 1e-3
        os.utime(driving, (mtime, mtime))
    return mtime


def still_negative(prompt: dict, cfg: float, frames: int = ds.DEMO_FRAMES) -> dict:
    """The demo prompt with motion guidance: the KSampler's negative is the conditioning of a still driver (the
    identity image repeated ``frames`` times through the same Encode, Retarget and Expression nodes), at
    classifier-free guidance ``cfg``, so the step moves away from the identity held still and towards the
    driver's motion. The demo DiT never saw a motion-free condition, so a still driver is the in-distribution
    "no motion" it can be guided against."""
    p = json.loads(json.dumps(prompt))
    sampler = next(k for k, n in p.items() if n["class_type"] == "KSampler")
    conditioning, _ = p[sampler]["inputs"]["positive"]
    retarget, _ = p[conditioning]["inputs"]["retargeted_motion"]
    expression, _ = p[conditioning]["inputs"]["expression"]
    encode, _ = p[retarget]["inputs"]["motion_tokens"]
    identity = p[retarget]["inputs"]["identity_image"]
    new = iter(str(i) for i in range(max(map(int, p)) + 1, 10**6))
    still, tokens, moved, expr, cond = (next(new) for _ in range(5))
    p[still] = {"class_type": "RepeatImageBatch", "inputs": {"image": identity, "amount": frames}}
    p[tokens] = {**p[encode], "inputs": {**p[encode]["inputs"], "frames": [still, 0]}}
    p[moved] = {**p[retarget], "inputs": {**p[retarget]["inputs"], "motion_tokens": [tokens, 0]}}
    p[expr] = {**p[expression], "inputs": {**p[expression]["inputs"], "frames": [still, 0],
                                           "motion_tokens": [tokens, 0]}}
    p[cond] = {**p[conditioning], "inputs": {**p[conditioning]["inputs"], "retargeted_motion": [moved, 0],
                                             "expression": [expr, 0]}}
    p[sampler]["inputs"].update(negative=[cond, 0], cfg=cfg)
    return p


def training_pairs(count: int) -> tuple[SyntheticPairs, str]:
    """Pairs 0..count-1 of the data the demo set's last training phase read (its run record in lab/runs/demo128:
    split, seed, frames, size and options), and a phrase naming them."""
    records = DEMO_RECORDS
    packaged = json.loads((records / "packaged.json").read_text())
    phase = next(Path(f).parent.name for f in packaged if Path(f).name == "wan_dit.safetensors")
    data = json.loads((records / phase / "config.json").read_text())["data"]
    pairs = SyntheticPairs(data["split"], count, data["frames"], data["size"], data["seed"], **data["options"])
    return pairs, (f"{data['split']} pairs 0..{count - 1} of seed {data['seed']} (the data of {phase}, the demo "
                   f"set's last training phase: {data['num_samples']} clips)")


class WorkflowRunner:
    """Runs the demo prompt (or a variant of it) on given inputs through a started server, and refuses an output
    that is not new (ComfyUI served a cached result)."""

    def __init__(self, server: ComfyServer):
        self.server, self.mtime, self.seen, self.previous, self.inputs = server, 0.0, set(), None, None

    def __call__(self, prompt: dict, inputs: dict, what: str) -> torch.Tensor:
        # The same inputs as the last run (only the sampler differs): the files stay, so ComfyUI reuses its
        # encode, retarget and expression outputs and runs the sampler on.
        if inputs is not self.inputs:
            self.mtime = write_inputs(self.server.base / "input", inputs, self.mtime)
            self.inputs = inputs
        video = demo.run_prompt(self.server, prompt)
        result = read_video(video).frames
        if video.name in self.seen or (self.previous is not None and self.previous.shape == result.shape
                                       and torch.equal(self.previous, result)):
            raise RuntimeError(f"{what}: ComfyUI returned the previous run's output ({video.name}); the inputs "
                               "did not invalidate its cache")
        self.seen.add(video.name)
        self.previous = result
        return result


def video_eval(server: ComfyServer, count: int, seed: int, guidance: float = 0.0, budget: bool = False) -> dict:
    """Run the demo workflow WORKFLOW_RUNS times (and BUDGET_RUNS times, with ``budget``) on each of held-out
    video pairs 0..count-1 of ``seed`` with one server (models already in server.models; started and stopped
    here) and score every row; with ``budget`` also the result on ``count`` training pairs ("train": rows result
    and vae_ceiling per pair). Raises when a run's output is not new (ComfyUI served a cached result). guidance
    > 0: the workflow with motion guidance at that cfg (still_negative)."""
    from im_animation_core.wan.vae import load_wan_vae

    data = video_pairs(count, seed)
    items = [data[i] for i in range(count)]
    vae = load_wan_vae(demo.SOURCES["vae"]).eval()
    write_inputs(server.base / "input", items[0], 0.0)  # LoadImage/LoadVideo validate the names
    pairs, train = [], None
    with server:
        run = WorkflowRunner(server)
        prompt = demo.demo_prompt(server)
        if guidance:
            prompt = still_negative(prompt, guidance)
        prompts = {key: with_steps(prompt, STEP_FACTORS[key]) if key in STEP_FACTORS else prompt
                   for key in (*WORKFLOW_RUNS, *BUDGET_RUNS)}
        for i, item in enumerate(items):
            start = time.time()
            runs = {**workflow_inputs(items, i), **(budget_inputs(item) if budget else {})}
            runs = {key: runs[key] for key in RUN_ORDER if key in runs}
            outputs = {key: run(prompts[key], inputs, f"pair {i} ({key})") for key, inputs in runs.items()}
            rows, notes = pair_scores(item, outputs, vae)
            kind = data.parameters(i)[2].kind
            pairs.append({"index": i, "motion": kind, "seconds": time.time() - start, "rows": rows,
                          "notes": notes, "frames_compared": min(outputs["result"].shape[0], item["target"].shape[0])})
            print(f"  video pair {i + 1}/{count} ({kind}, {len(runs)} workflow runs): "
                  f"{pairs[-1]['seconds']:.0f} s", file=sys.stderr, flush=True)
        if budget:
            train_data, described = training_pairs(count)
            train = {"described": described, "pairs": []}
            for i in range(count):
                item = train_data[i]
                metrics = image_metrics(item, run(prompt, item, f"training pair {i}"), vae)
                train["pairs"].append({"index": i, "motion": train_data.parameters(i)[2].kind,
                                       "rows": {"result": metrics["rows"][RESULT_ROW],
                                                "vae_ceiling": metrics["rows"][VAE_CEILING_ROW]}})
                print(f"  training pair {i + 1}/{count}", file=sys.stderr, flush=True)
    return {"count": count, "seed": seed, "pairs": pairs, "guidance": guidance, "train": train}


def _table(title: str, labels: dict[str, str], summaries: dict[str, dict]) -> list[str]:
    lines = [f"| {title} | PSNR (dB) | SSIM | motion correlation |", "|---|---|---|---|"]
    for key, label in labels.items():
        cells = [f"{summaries[key][m]['mean']:.{d}f} ± {summaries[key][m]['std']:.{d}f}"
                 for m, d in zip(ej.VIDEO_METRICS, (2, 3, 3), strict=True)]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def per_pair_line(name: str, pairs: list[dict], row: str) -> str:
    def values(m: str, digits: int) -> str:
        return " / ".join(f"{p['rows'][row][m]:.{digits}f}" for p in pairs)

    return f"Per pair ({name}): PSNR {values('psnr', 2)}; SSIM {values('ssim', 3)}; motion correlation " \
           f"{values('motion_corr', 3)}"


def video_table(results: dict, weights: str) -> list[str]:
    """Markdown: mean ± std of every row over the pairs, in two tables by reference, and per-pair values."""
    pairs, n, seed = results["pairs"], results["count"], results["seed"]
    summaries = ej.row_summaries([p["rows"] for p in pairs], [*VS_GROUND_TRUTH, *VS_IDENTITY_STILL])
    guided = (f", with motion guidance (the KSampler's negative a still driver's conditioning, cfg "
              f"{results['guidance']:g})" if results.get("guidance") else "")
    lines = [f"Cross-reenactment through the real ComfyUI pipeline (workflows/im_animation_demo.json{guided}, its "
             f"seed fixed): held-out pairs 0..{n - 1} of seed {seed} ({ds.DEMO_FRAMES} frames of "
             f"{ds.DEMO_SIZE}x{ds.DEMO_SIZE}, thickness_scale {ds.DEMO_THICKNESS_SCALE}, min_contrast "
             f"{ds.DEMO_MIN_CONTRAST}); each clip against its ground truth (the driving motion rendered on the "
             f"identity's body), {pairs[0]['frames_compared']} frames compared; weights: {weights}. The control "
             f"gives pair i the driving clip of pair (i+1) mod {n} and scores it against pair i's own ground "
             "truth.", ""]
    notes = sorted({note for p in pairs for note in p["notes"]})
    lines += [f"Note: {note}" for note in notes] + ([""] if notes else [])
    lines += _table(f"vs ground truth, mean ± std over {n} pairs", VS_GROUND_TRUTH, summaries)
    lines += ["", "A still driver: the identity image as every driving frame; a model that keeps the identity "
              "and follows the driver gives the identity image back, sharp and still. Scored against the "
              "identity image held still, whose motion correlation with anything is 0 by definition: read "
              "PSNR / SSIM here.", ""]
    lines += _table(f"vs identity held still, mean ± std over {n} pairs", VS_IDENTITY_STILL, summaries)
    lines += ["", "std: the population standard deviation over the pairs. Motion correlation: the Pearson "
              "correlation of each clip's deviation from its own temporal mean with the ground truth's "
              "(`im_animation_core.eval.metrics.motion_correlation`): 1 = the same changes, 0 = none (the "
              "still image scores 0).", "",
              per_pair_line("result", pairs, "result") + "; motions " + " / ".join(p["motion"] for p in pairs)
              + f"; {sum(p['seconds'] for p in pairs) / n:.0f} s per pair ({len(WORKFLOW_RUNS)} workflow runs).",
              "", per_pair_line("control, another pair's driver", pairs, "driver_swap") + "."]
    if all(key in pairs[0]["rows"] for key in BUDGET_RUNS):
        lines += budget_section(results, summaries_of(pairs, BUDGET_LABELS))
    return lines


def summaries_of(pairs: list[dict], rows) -> dict[str, dict]:
    return ej.row_summaries([p["rows"] for p in pairs], list(rows))


def budget_section(results: dict, budget: dict[str, dict]) -> list[str]:
    """Markdown: the error budget's video rows (BUDGET_LABELS over the held-out pairs, the training pairs'
    rows) and the result and VAE ceiling per motion family."""
    pairs, n = results["pairs"], results["count"]
    lines = ["", "### Error-budget rows", "", "On the same held-out pairs, scored against the same ground truth:",
             ""]
    lines += _table(f"vs ground truth, mean ± std over {n} pairs", BUDGET_LABELS, budget)
    lines += ["", per_pair_line("self_reenact", pairs, "self_reenact") + "."]
    train = results.get("train")
    if train:
        lines += ["", f"Training pairs: {train['described']}, through the same workflow:", ""]
        lines += _table(f"vs ground truth, mean ± std over {len(train['pairs'])} training pairs", TRAIN_LABELS,
                        {"train_pairs": summaries_of(train["pairs"], ["result"])["result"],
                         "train_pairs_vae_ceiling": summaries_of(train["pairs"], ["vae_ceiling"])["vae_ceiling"]})
        lines += ["", per_pair_line("training pairs", train["pairs"], "result") + "; motions "
                  + " / ".join(p["motion"] for p in train["pairs"]) + "."]
    families = ej.video_json([p["rows"] for p in pairs], [p["motion"] for p in pairs])["families"]
    lines += ["", "By motion family (held-out pairs; motion correlation, mean ± std):", "",
              "| family | pairs | result | VAE ceiling | result / ceiling |", "|---|---|---|---|---|"]
    for family, entry in families.items():
        if not entry["pairs"]:
            lines.append(f"| {family} | 0 | {entry['note']} | | |")
            continue
        r, c = (entry["rows"][row]["motion_corr"] for row in ("result", "vae_ceiling"))
        share = f"{r['mean'] / c['mean']:.0%}" if c["mean"] > 0 else "(no motion through the VAE)"
        lines.append(f"| {family} | {entry['pairs']} | {r['mean']:.3f} ± {r['std']:.3f} | {c['mean']:.3f} ± "
                     f"{c['std']:.3f} | {share} |")
    return lines


def video_section(count: int, base: Path, seed: int, guidance: float = 0.0,
                  budget: bool = False) -> tuple[list[str], dict | None]:
    """The video metrics with the trained demo models on a fresh server under base (with the error budget's
    runs when ``budget``): (Markdown lines, the results of video_eval), or (the lines saying why they are
    skipped, None)."""
    shutil.rmtree(base, ignore_errors=True)
    server = ComfyServer(base=base)
    if not demo.install_models(server.models):
        missing = [str(p.relative_to(REPO)) for p in demo.SOURCES.values() if not p.is_file()]
        return [SKIP_NOTE, f"(missing: {', '.join(missing)})"], None
    results = video_eval(server, count, seed, guidance, budget)
    return video_table(results, "trained demo models (models/)"), results
