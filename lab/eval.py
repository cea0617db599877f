"""make eval: the retargeting stage on held-out synthetic pairs, against ground truth.

For each held-out pair (an identity and a motion never seen in training, facts in
im_animation_core/synthetic/sampling.py), the retargeter places the identity's joints per latent frame;
the truth is the same motion rendered on the identity's body. Printed: PCK@0.05, mean joint error in
pixels and identity leakage (0 = the identity's proportions, 1 = the driver's), for the trained model and
two references: copying the driver's joints (what a pose-transfer without retargeting does) and holding
the identity's rest pose (no motion at all); and, as a control, the trained model given another pair's
driving clip (a retargeter that follows the driver does much worse there). Also, when present, each run
under --runs (one folder per variant and seed, each with stage-2 outputs) as mean and spread over seeds,
variants and seeds in natural name order, with each seed's values.

Then (--pairs N, alias --video; default 8; 0 skips it) the cross-reenactment video metrics through the real
ComfyUI pipeline: one server (base .eval/) with the trained demo models of make demo runs
workflows/im_animation_demo.json on held-out pairs 0..N-1 (N >= 2) of seed eval_video.EVAL_VIDEO_SEED, each
pair three times (its own driving clip; another pair's, as a control; its identity image as a still driver),
and PSNR / SSIM and motion correlation of the outputs are printed as mean ± std, with references (the identity
image held still, the driving clip, the ground truth and the still clip through the VAE); lab/eval_video.py
says what each row is scored against. Skipped, saying so, without the trained models.

The error budget (on unless --no-budget): per held-out pair three more workflow runs (driven by its own ground
truth; at 2x and 4x the sampler steps), the result on as many pairs of the demo set's training data, the result
and VAE ceiling per motion family, and beside the retargeter's rows the Stage-1 token probe (the driver's own
pose from the frozen tokens) and both over the arm joints alone; the report then opens with the table "where the
motion is lost" (im_animation_core.eval.budget).

--seed S draws both the video pairs and the retargeting pairs from generator seed S instead of their defaults
(eval_video.EVAL_VIDEO_SEED and HELDOUT_SEED); every held-out split keeps identities and motions never seen
in training, whatever the seed.

--write PATH also saves everything printed as Markdown under a header (command, date, machine, held-out sets).
--json PATH also writes the clips drawn and the video and retargeting rows as JSON (lab/eval_json.py).

    python -m lab.eval [--stage2 runs/demo/stage2] [--vae FILE] [--count 48] [--runs runs/ablations]
                           [--pairs 8] [--seed S] [--write docs/results.md] [--json PATH]
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch

from im_animation_core.data import SyntheticPairs, collate_pairs
from im_animation_core.eval.budget import ARM_JOINTS, budget_table
from im_animation_core.eval.retarget_eval import OtherDriver, evaluate_retargeting, reference_scores
from im_animation_core.train.outputs import read_run_outputs, run_file, run_finished
from im_animation_core.wan.vae import load_wan_vae
from lab import DEMO_RECORDS
from lab import eval_json as ej
from lab import eval_support as es
from lab import eval_video as ev
from tools import demo
from tools import demo_support as ds

REPO = Path(__file__).resolve().parents[1]

HELDOUT_SEED = 2026
# Both driver_swap rows (video and retargeting) pair drivers the same way; the JSON says how.
DRIVER_SWAP = "pair i is given the driving clip of pair (i+1) mod pairs"
COMMITTED = demo.SOURCES  # the demo model set in models/ (keys dit, vae, tokenizer, modules)
# The Stage-1 heatmap head of the demo set's tokenizer (its run record): the token probe's decoder.
TOKEN_PROBE_HEAD = DEMO_RECORDS / "stage1" / "heatmap_head.safetensors"


def load_run(stage2: Path):
    """(encoder, modules) of a stage output folder (outputs.json), or of the committed demo models when
    ``stage2`` is the word "committed"."""
    from im_animation_core.tokenizer import MotionTokenizer
    from im_animation_core.train.encoders import ConvMotionEncoder, TokenizerEncoder
    from im_animation_core.train.modules_file import load_modules

    if str(stage2) == "committed":
        return (TokenizerEncoder(MotionTokenizer.from_file(COMMITTED["tokenizer"])).eval(),
                load_modules(str(COMMITTED["modules"])).eval())
    if "motion_tokenizer" in read_run_outputs(stage2)["files"]:
        encoder = TokenizerEncoder(MotionTokenizer.from_file(run_file(stage2, "motion_tokenizer")))
    else:
        encoder = ConvMotionEncoder.from_file(run_file(stage2, "conv_motion_encoder"))
    modules = load_modules(str(run_file(stage2, "modules")))
    return encoder.eval(), modules.eval()


def shown(path: Path) -> str:
    """A path as the report writes it: relative to the repository when inside it, so that no machine's folders
    end up in a committed report."""
    path = Path(path)
    return str(path.resolve().relative_to(REPO)) if path.resolve().is_relative_to(REPO) else str(path)


def row(name: str, m: dict) -> str:
    """A retargeting table row; a metric that does not apply to the row (NaN: leakage of the arm joints) is
    written "n/a"."""
    def cell(key: str, digits: int) -> str:
        return "n/a" if math.isnan(m[key]) else f"{m[key]:.{digits}f}"

    return (f"| {name} | {cell('pck', 3)} | {cell('mean_error_px', 2)} | {cell('leakage', 3)} | "
            f"{cell('d_identity', 3)} | {cell('d_driver', 3)} |")


def evaluate_ablations(runs: Path, vae, data, count: int) -> dict[str, dict[str, dict]]:
    """{variant: {seed: metrics}} of every runs/<variant>/<seed> with stage-2 outputs, variants and seeds in
    natural name order (seed2 before seed10)."""
    out = {}
    for variant in sorted((p for p in runs.iterdir() if p.is_dir()), key=es.natural_key) if runs.is_dir() else []:
        seeds = {s.name: evaluate_retargeting(*load_run(s), vae, data, count)
                 for s in sorted(variant.iterdir(), key=es.natural_key) if run_finished(s)}
        if seeds:
            out[variant.name] = seeds
    return out


def ablation_row(name: str, per_seed: list[dict], budget: str) -> str:
    """A variant's row of the main table: mean ± stdev over its seeds."""
    def stats(k):  # leakage is NaN for a seed whose predicted joints give no limb ratios
        finite = [m[k] for m in per_seed if math.isfinite(m[k])]
        return es.mean_sd(finite) if finite else (math.nan, 0.0)

    agg, spread = {}, {}
    for k in per_seed[0]:
        agg[k], spread[k] = stats(k)
    return (f"| {name} ({len(per_seed)} seeds, {budget}) | {agg['pck']:.3f} ± {spread['pck']:.3f} | "
            f"{agg['mean_error_px']:.2f} ± {spread['mean_error_px']:.2f} | {agg['leakage']:.3f} ± "
            f"{spread['leakage']:.3f} | {agg['d_identity']:.3f} | {agg['d_driver']:.3f} |")


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser()
    ap.add_argument("--stage2", default="committed",
                    help="a stage-2 or stage-3 output folder, or 'committed' (the demo models in models/)")
    ap.add_argument("--vae", default=str(COMMITTED["vae"]))
    ap.add_argument("--count", type=int, default=48, help="held-out pairs for the retargeting metrics")
    ap.add_argument("--frames", type=int, default=9)
    ap.add_argument("--size", type=int, default=ds.DEMO_SIZE,
                    help="frame size of the retargeting pairs (default: the demo models' training data)")
    ap.add_argument("--thickness-scale", type=float, default=ds.DEMO_THICKNESS_SCALE,
                    help="SyntheticPairs thickness_scale of the retargeting pairs (default: the demo models' "
                         "training data)")
    ap.add_argument("--min-contrast", type=float, default=ds.DEMO_MIN_CONTRAST,
                    help="SyntheticPairs min_contrast of the retargeting pairs (default: the demo models' training "
                         "data)")
    ap.add_argument("--runs", default=str(REPO / "runs/ablations"))
    ap.add_argument("--pairs", "--video", dest="pairs", type=int, default=8, metavar="N",
                    help="held-out pairs for the video metrics through ComfyUI (0: skip them; else at least 2, "
                         "since the control gives each pair another pair's driver)")
    ap.add_argument("--seed", type=int, metavar="S",
                    help=f"generator seed of the video and the retargeting pairs (default: {ev.EVAL_VIDEO_SEED} "
                         f"and {HELDOUT_SEED})")
    ap.add_argument("--guidance", type=float, default=0.0, metavar="CFG",
                    help="score the video rows with motion guidance: the KSampler's negative a still driver's "
                         "conditioning, at this cfg (0: the demo workflow as it is, cfg 1)")
    ap.add_argument("--no-budget", dest="budget", action="store_false",
                    help="skip the error budget's rows (3 more workflow runs per held-out pair, 1 per training pair, "
                         "the token probe)")
    ap.add_argument("--write", metavar="PATH", help="also write everything printed to this Markdown file")
    ap.add_argument("--json", metavar="PATH", help="also write the clips and the video and retargeting rows as JSON")
    args = ap.parse_args()
    if args.pairs == 1 or args.pairs < 0:
        ap.error(f"--pairs {args.pairs}: give 0 (no video metrics) or at least 2 (the control row gives each "
                 "pair another pair's driving clip)")
    if args.guidance < 0:
        ap.error(f"--guidance {args.guidance}: give a cfg above 0 (e.g. 2), or 0 for the workflow as it is")
    args.video_seed = ev.EVAL_VIDEO_SEED if args.seed is None else args.seed
    args.retarget_seed = HELDOUT_SEED if args.seed is None else args.seed
    return args


def retargeting(args, out: es.Report) -> dict[str, dict | None]:
    """Print the retargeting table and the ablations; returns the rows of eval_json.RETARGET_ROWS (None for
    the trained model's rows when there is none)."""
    torch.manual_seed(0)
    data = SyntheticPairs("heldout", args.count, args.frames, args.size, args.retarget_seed,
                          thickness_scale=args.thickness_scale, min_contrast=args.min_contrast)
    vae = load_wan_vae(args.vae).eval()
    out("## Retargeting\n")
    out(f"held-out pairs: {args.count} of seed {args.retarget_seed}, {args.frames} frames of {args.size}x{args.size} "
        f"(thickness_scale {args.thickness_scale}, min_contrast {args.min_contrast}); PCK@0.05 of the frame side; "
        "leakage 0 = identity's proportions, 1 = driver's\n")
    out("| model | PCK@0.05 | mean error (px) | leakage | d_identity | d_driver |\n|---|---|---|---|---|---|")
    references = reference_scores(collate_pairs([data[i] for i in range(args.count)]))
    for name, m in references.items():
        out(row(name, m))
    rows = {"copy_driver": references["copy driver joints"], "rest_pose": references["identity rest pose"],
            "result": None, "driver_swap": None}
    stage2 = Path(args.stage2)
    committed = args.stage2 == "committed"
    have_committed = committed and all(COMMITTED[k].is_file() for k in ("tokenizer", "modules", "vae"))
    if have_committed or run_finished(stage2):
        encoder, modules = load_run(stage2)
        name = "demo models in models/" if committed else stage2.name
        rows["result"] = evaluate_retargeting(encoder, modules, vae, data, args.count)
        rows["driver_swap"] = evaluate_retargeting(encoder, modules, vae, OtherDriver(data, args.count), args.count)
        out(row(f"IM-Animation retargeting ({name})", rows["result"]))
        out(row("the same, each pair given another pair's driving clip (control: no better if it ignores the "
                "driver)", rows["driver_swap"]))
        if args.budget:
            rows.update(budget_retarget_rows(encoder, modules, vae, data, args.count))
            out(row("IM-Animation retargeting, the arm joints alone (elbows, wrists)", rows["result_arms"]))
            for key, label in (("token_probe", "token probe: the driver's own pose from the frozen motion tokens "
                                               "(Stage-1 heatmap head; vs the driving joints)"),
                               ("token_probe_arms", "token probe, the arm joints alone")):
                if rows[key] is not None:
                    out(row(label, rows[key]))
            if rows["token_probe"] is None:
                out(f"| token probe | not run: no Stage-1 heatmap head at {TOKEN_PROBE_HEAD.relative_to(REPO)} "
                    "| | | | |")
    else:
        out(f"| IM-Animation retargeting | not trained: no {'demo models in models/' if committed else stage2} "
            "| | | | |")
    runs = Path(args.runs)
    ablations = evaluate_ablations(runs, vae, data, args.count)
    for name, seeds in ablations.items():
        out(ablation_row(name, list(seeds.values()), es.training_budget(runs / name)))
    if ablations:
        out(f"\nAblations ({shown(runs)}/<variant>/<seed>): mean ± stdev over seeds above; each seed's value here.\n")
        for line in es.ablation_seed_table(ablations):
            out(line)
    else:
        out(f"\nAblations: none with stage-2 outputs under {shown(runs)}.")
    return rows


def budget_retarget_rows(encoder, modules, vae, data, count: int) -> dict[str, dict | None]:
    """The error budget's retargeting rows: the retargeter on the arm joints alone, and the token probe (all
    joints and arms; None without the Stage-1 head). The arm rows and the probe have no leakage (NaN)."""
    from im_animation_core.eval.token_probe import token_pose_probe
    from im_animation_core.heatmap_head import HeatmapHead

    rows = {"result_arms": evaluate_retargeting(encoder, modules, vae, data, count, joints=ARM_JOINTS),
            "token_probe": None, "token_probe_arms": None}
    if TOKEN_PROBE_HEAD.is_file():
        head = HeatmapHead.from_file(TOKEN_PROBE_HEAD).eval()
        nan = {"leakage": math.nan, "d_identity": math.nan, "d_driver": math.nan}
        rows["token_probe"] = {**token_pose_probe(encoder, head, data, count), **nan}
        rows["token_probe_arms"] = {**token_pose_probe(encoder, head, data, count, joints=ARM_JOINTS), **nan}
    return rows


def clips_entry(args) -> dict:
    """The JSON "clips" entry: the video pairs and, under "retarget", the retargeting pairs."""
    return {"size": ds.DEMO_SIZE, "frames": ds.DEMO_FRAMES, "pairs": args.pairs, "seed": args.video_seed,
            "split": "heldout", "thickness_scale": ds.DEMO_THICKNESS_SCALE, "min_contrast": ds.DEMO_MIN_CONTRAST,
            "driver_swap": DRIVER_SWAP, **({"guidance": args.guidance} if args.guidance else {}),
            "retarget": {"size": args.size, "frames": args.frames, "pairs": args.count, "seed": args.retarget_seed,
                         "split": "heldout", "thickness_scale": args.thickness_scale,
                         "min_contrast": args.min_contrast, "driver_swap": DRIVER_SWAP}}


def main() -> int:
    args = parse_args()
    out = es.Report()
    retarget_rows = retargeting(args, out)
    video = None
    if args.pairs > 0:
        out("\n## Cross-reenactment video\n")
        lines, video = ev.video_section(args.pairs, REPO / ".eval", args.video_seed, args.guidance, args.budget)
        for line in lines:
            out(line)
    motions = [p["motion"] for p in video["pairs"]] if video else None
    per_pair = [p["rows"] for p in video["pairs"]] if video else None
    train = [p["rows"] for p in video["train"]["pairs"]] if video and video.get("train") else None
    content = ej.eval_json(clips_entry(args), per_pair, retarget_rows, motions, train)
    opening = []
    if args.budget and video:
        opening = ["## Where the motion is lost", "",
                   "The error budget of the result's motion correlation on the held-out video pairs below: each "
                   "term, its figure and its share of the gap to the VAE ceiling (`im_animation_core.eval.budget` "
                   "says how each is read off the rows).", "",
                   *budget_table(content["video"], content["retarget"])]
        print("\n" + "\n".join(opening))
    if args.write:
        clips = (f"video: held-out pairs 0..{args.pairs - 1} of SyntheticPairs seed {args.video_seed}, "
                 f"{ds.DEMO_FRAMES} frames of {ds.DEMO_SIZE}x{ds.DEMO_SIZE}, thickness_scale "
                 f"{ds.DEMO_THICKNESS_SCALE}, min_contrast {ds.DEMO_MIN_CONTRAST}"
                 if args.pairs > 0 else "video: not run (--pairs 0)")
        es.write_report(Path(args.write), out, [
            f"retargeting: held-out pairs 0..{args.count - 1} of SyntheticPairs seed {args.retarget_seed}, "
            f"{args.frames} frames of {args.size}x{args.size}, thickness_scale {args.thickness_scale}, min_contrast "
            f"{args.min_contrast}", clips,
            f"stage 2: {shown(Path(args.stage2))}; ablations: {shown(Path(args.runs))}; VAE: {shown(Path(args.vae))}"],
            opening)
        print(f"\nwrote {args.write}")
    if args.json:
        if video:
            content["clips"]["motions"] = motions
            if video.get("train"):
                content["clips"]["train_pairs"] = video["train"]["described"]
        elif args.pairs > 0:
            content["clips"]["video_skipped"] = ev.SKIP_NOTE
        ej.write(Path(args.json), content)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
