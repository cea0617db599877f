"""The joint Stage-3 step of the 128-px demo chain with what the CPU offers, side by side in one process.

    python -m lab.bench.bench_joint_step [--recipe configs/demo128.json --phase stage3_joint10 | --config CFG.json]
                                     [--set KEY=VALUE ...] [--variants fp32,bf16,...] [--rounds 12]
                                     [--warmup 3] [--json OUT]
    python -m lab.bench.bench_joint_step --curve 500 [--curve-variant bf16+fused] [--clips 64] [--json OUT]

The config: by default the demo chain's latest joint phase (its recipe's phase stage3_joint10), or --config.

Timing (the default): one ``Trainer`` per variant, each built by the trainer's own code from the config with
the variant's fields set (``VARIANTS``: mixed_precision "bf16", compile, optim.implementation), all starting
from the same weights, and each timed with ``Trainer.train_step`` on the same batch held in memory (the
fields a clip cache serves, ``Stage.cached_fields`` of the config's first clips, so no loading is timed).
After --warmup steps each (compiling happens there), --rounds rounds time one step of every variant in turn,
the order rotated each round, so that the load of a shared machine falls on all variants alike. The table:
median seconds per step, clip-updates per hour (batch_size x 3600 / s), and the per-round ratio to the first
variant (today's step) per clip-update (a variant may set another batch_size: each trains on its own batch),
with a 95% distribution-free interval of its median (lab.bench.paired).

Curve (--curve N): N training steps of the first variant and of --curve-variant through ``Trainer.train``
from the same weights, seed and data order, on an in-memory pool of --clips clips (the fields a clip cache
holds, so a clip cache need not exist); the losses of each step are compared: mean over the first and last
100 steps (or N/5 when N < 500), the step-to-step noise (standard deviation) and the paired differences.

Weights: by default the committed demo set (models/, the outputs of the joint phase the next one continues
from), in place of the config's runs/ paths, which a fresh clone does not have; --keep-paths reads the
config's. Nothing is saved (curve runs write into a temporary folder). The CPU's bfloat16 units and torch's
CPU capability are printed and recorded in the JSON.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from im_animation_core.train.__main__ import _apply_sets
from im_animation_core.train.build import build_dataset, collate_fn
from im_animation_core.train.config import config_from_dict
from im_animation_core.train.recipe import recipe_phase_config
from im_animation_core.train.trainer import Trainer, cpu_bf16_problem
from lab.bench.paired import median_interval

REPO = Path(__file__).resolve().parents[2]
DEFAULT_RECIPE, DEFAULT_PHASE = "configs/demo128.json", "stage3_joint10"
# The demo set: the DiT, modules and tokenizer of the latest joint phase and the dim-16 VAE (tools/demo_set.py).
DEMO_SET = {"tokenizer.path": "models/im_animation/ima_demo_motion_tokenizer.safetensors",
            "modules.path": "models/im_animation/ima_demo_modules.safetensors",
            "dit.path": "models/diffusion_models/ima_demo_wan.safetensors",
            "vae.path": "models/vae/ima_demo_wan21_vae.safetensors"}
# {name: config fields it sets}; the first is today's step, the reference of every ratio.
VARIANTS: dict[str, dict[str, Any]] = {
    "fp32": {},
    "fused": {"optim.implementation": "fused"},
    "foreach": {"optim.implementation": "foreach"},
    "bf16": {"mixed_precision": "bf16"},
    "bf16+fused": {"mixed_precision": "bf16", "optim.implementation": "fused"},
    "compile": {"compile": True},
    "compile+fused": {"compile": True, "optim.implementation": "fused"},
    "bf16+compile+fused": {"mixed_precision": "bf16", "compile": True, "optim.implementation": "fused"},
    # Twice the clips per update: fewer, larger updates (ratios are per clip-update, see time_variants).
    "bf16+compile+fused+b8": {"mixed_precision": "bf16", "compile": True, "optim.implementation": "fused",
                              "batch_size": 8},
}
DEFAULT_VARIANTS = "fp32,fused,bf16,bf16+fused,compile+fused,bf16+compile+fused"


def cpu_report() -> dict[str, Any]:
    """What decides the CPU paths: torch's CPU capability and the bfloat16 units it reports."""
    flags = {name: bool(getattr(torch.cpu, f"_is_{name}_supported", lambda: False)())
             for name in ("avx512_bf16", "amx_tile", "avx512")}
    return {"cpu": platform.processor() or platform.machine(), "torch": torch.__version__,
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), **flags,
            "bf16_problem": cpu_bf16_problem(), "threads": torch.get_num_threads()}


def base_config(args: argparse.Namespace) -> dict[str, Any]:
    if args.config:
        data = json.loads(Path(args.config).read_text(encoding="utf-8"))
    else:
        stage, data = recipe_phase_config(REPO / args.recipe, args.phase)
        if stage != "stage3":
            raise SystemExit(f"phase '{args.phase}' of {args.recipe} is a {stage} phase; name a Stage-3 phase")
    sets = [] if args.keep_paths else [f"{k}={REPO / v}" for k, v in DEMO_SET.items()]
    data = _apply_sets(data, [*sets, *args.set])
    data["data"] = {**data.get("data", {}), "cache": ""}  # the clips come from memory (in_memory_clips)
    return data


def variant_config(data: dict[str, Any], name: str, output_dir: str, **fields: Any):
    if name not in VARIANTS:
        raise SystemExit(f"unknown variant '{name}'; choose from {', '.join(VARIANTS)}")
    merged = json.loads(json.dumps(data))
    merged["output_dir"] = output_dir
    for key, value in {**VARIANTS[name], **fields}.items():
        node = merged
        *parents, last = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return config_from_dict("stage3", merged)


def in_memory_clips(trainer: Trainer, count: int, chunk: int = 8) -> list[dict[str, torch.Tensor]]:
    """The first ``count`` clips of the config's dataset as a clip cache holds them (Stage.cached_fields),
    one dict per clip, each without a batch axis."""
    dataset, collate = build_dataset(trainer.config.data), collate_fn()
    clips = []
    for first in range(0, count, chunk):
        batch = collate([dataset[i] for i in range(first, min(first + chunk, count))])
        fields = trainer.stage.cached_fields(batch)
        clips += [{k: v[i] for k, v in fields.items()} for i in range(next(iter(fields.values())).shape[0])]
    return clips


def time_variants(data: dict[str, Any], names: list[str], rounds: int, warmup: int) -> dict[str, Any]:
    """Per variant: median s/step, clip-updates per hour, and the speed-up over names[0] per clip-update (the
    per-round ratio of s/clip, so a variant with another batch_size is compared per clip it trains on)."""
    with tempfile.TemporaryDirectory() as tmp:
        trainers = {n: Trainer("stage3", variant_config(data, n, f"{tmp}/{n}")) for n in names}
        first = trainers[names[0]]
        sizes = {n: t.config.batch_size for n, t in trainers.items()}
        clips = in_memory_clips(first, max(sizes.values()))
        batches = {n: {**collate_fn()(clips[:b]), "index": torch.arange(b)} for n, b in sizes.items()}
        params = {n: [p for g in t.optimizer.param_groups for p in g["params"]] for n, t in trainers.items()}
        for t in trainers.values():
            t.model.train()
        step = {n: 0 for n in names}
        warm: dict[str, list[float]] = {n: [] for n in names}

        def one(n: str) -> tuple[float, float]:
            step[n] += 1
            wall, cpu = time.perf_counter(), time.process_time()
            trainers[n].train_step(batches[n], step[n], params[n])
            return time.perf_counter() - wall, time.process_time() - cpu

        for n in names:  # compiling happens in the first of these
            warm[n] = [one(n)[0] for _ in range(warmup)]
            print(f"  warm-up {n}: {', '.join(f'{s:.2f}' for s in warm[n])} s", flush=True)
        walls: dict[str, list[float]] = {n: [] for n in names}
        cpus: dict[str, list[float]] = {n: [] for n in names}
        for r in range(rounds):
            order = names[r % len(names):] + names[:r % len(names)]
            for n in order:
                w, c = one(n)
                walls[n].append(w)
                cpus[n].append(c)
            print(f"  round {r + 1}/{rounds}: " + ", ".join(f"{n} {walls[n][-1]:.2f}" for n in names), flush=True)
        fell_back = {n: {"bf16": VARIANTS[n].get("mixed_precision") == "bf16" and t.autocast_dtype is None,
                         "compile": bool(VARIANTS[n].get("compile")) and not t.compiled}
                     for n, t in trainers.items()}
    rows = {}
    for n in names:
        s = statistics.median(walls[n])
        scale = sizes[n] / sizes[names[0]]
        ratios = [scale * a / b for a, b in zip(walls[names[0]], walls[n], strict=True)]  # per clip-update
        mid, low, high = median_interval(ratios)
        rows[n] = {"fields": VARIANTS[n], "batch_size": sizes[n], "s_per_step": s,
                   "cpu_s_per_step": statistics.median(cpus[n]),
                   "clip_updates_per_hour": sizes[n] * 3600 / s, "speedup": mid, "speedup_low": low,
                   "speedup_high": high, "first_step_s": warm[n][0] if warm[n] else None,
                   "fell_back": [k for k, v in fell_back[n].items() if v]}
    return {"batch_size": sizes[names[0]], "rounds": rounds, "warmup": warmup, "rows": rows}


def print_table(result: dict[str, Any]) -> None:
    print(f"\n{'variant':<22} {'s/step':>8} {'CPU s/step':>10} {'clip-updates/h':>15} {'speed-up (95% CI)':>24}"
          f" {'1st step s':>10}")
    for n, r in result["rows"].items():
        ci = f"{r['speedup']:.2f} ({r['speedup_low']:.2f}-{r['speedup_high']:.2f})"
        note = f"  fell back: {', '.join(r['fell_back'])}" if r["fell_back"] else ""
        print(f"{n:<22} {r['s_per_step']:>8.3f} {r['cpu_s_per_step']:>10.3f} {r['clip_updates_per_hour']:>15.0f}"
              f" {ci:>24} {r['first_step_s'] or math.nan:>10.1f}{note}")


def _losses(metrics: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in metrics.read_text().splitlines() if line.strip()]


def _summary(losses: list[float], window: int) -> dict[str, float]:
    first, last = losses[:window], losses[-window:]
    return {"first_mean": statistics.fmean(first), "last_mean": statistics.fmean(last),
            "last_sd": statistics.stdev(last), "last_se": statistics.stdev(last) / math.sqrt(len(last)),
            "step_to_step_sd": statistics.stdev([b - a for a, b in zip(losses, losses[1:], strict=False)])}


def loss_curves(data: dict[str, Any], names: list[str], steps: int, clips: int) -> dict[str, Any]:
    """``steps`` steps of each variant from the same start, seed and data order; per-step losses compared."""
    with tempfile.TemporaryDirectory() as tmp:
        fields = {"steps": steps, "log_every": 1, "save_every": steps, "progress": False}
        pool = None
        out: dict[str, Any] = {"steps": steps, "clips": clips, "runs": {}}
        curves = {}
        for n in names:
            config = variant_config(data, n, f"{tmp}/{n}", **fields)
            trainer = Trainer("stage3", config, dataset=pool)
            if pool is None:
                pool = in_memory_clips(trainer, clips)
                trainer.dataset = pool
            start = time.perf_counter()
            try:
                trainer.train()
            finally:
                trainer.close()
            curves[n] = _losses(Path(tmp) / n / "metrics.jsonl")
            out["runs"][n] = {"seconds": time.perf_counter() - start, "fell_back": {
                "bf16": config.mixed_precision == "bf16" and trainer.autocast_dtype is None,
                "compile": config.compile and not trainer.compiled}}
            print(f"  {n}: {steps} steps in {out['runs'][n]['seconds']:.0f} s", flush=True)
    window = 100 if steps >= 500 else max(steps // 5, 2)
    a, b = (curves[n] for n in names)
    diffs = [y - x for x, y in zip(a, b, strict=True)]
    for n in names:
        out["runs"][n].update(_summary(curves[n], window), losses=curves[n])
    sa, sb = out["runs"][names[0]], out["runs"][names[1]]
    # two independent windows' means: the difference's standard error
    se = math.hypot(sa["last_se"], sb["last_se"])
    out.update(window=window, paired_mean_diff=statistics.fmean(diffs),
               paired_abs_diff=statistics.fmean(abs(d) for d in diffs),
               last_mean_diff=sb["last_mean"] - sa["last_mean"], last_mean_diff_se=se,
               within_noise=abs(sb["last_mean"] - sa["last_mean"]) <= 2 * se)
    return out


def print_curves(result: dict[str, Any]) -> None:
    w = result["window"]
    print(f"\n{'variant':<22} {'first ' + str(w):>10} {'last ' + str(w):>10} {'(sd)':>8} {'step-to-step sd':>16}"
          f" {'s':>7}")
    for n, r in result["runs"].items():
        print(f"{n:<22} {r['first_mean']:>10.4f} {r['last_mean']:>10.4f} {r['last_sd']:>8.4f} "
              f"{r['step_to_step_sd']:>16.4f} {r['seconds']:>7.0f}")
    print(f"last-{w} mean difference {result['last_mean_diff']:+.4f} (standard error "
          f"{result['last_mean_diff_se']:.4f}): "
          f"{'within' if result['within_noise'] else 'OUTSIDE'} noise (2 SE); per-step paired difference: mean "
          f"{result['paired_mean_diff']:+.4f}, mean |.| {result['paired_abs_diff']:.4f}")


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipe", default=DEFAULT_RECIPE, help="the recipe holding the joint phase")
    ap.add_argument("--phase", default=DEFAULT_PHASE, help="the recipe's joint Stage-3 phase")
    ap.add_argument("--config", help="a Stage-3 config (.json) instead of the recipe's phase")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field")
    ap.add_argument("--keep-paths", action="store_true", help="read the config's weights, not the demo set's")
    ap.add_argument("--variants", default=DEFAULT_VARIANTS, help=f"comma-separated, the first the reference; "
                                                                 f"known: {', '.join(VARIANTS)}")
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--curve", type=int, default=0, metavar="STEPS",
                    help="compare loss curves of this many steps instead of timing")
    ap.add_argument("--curve-variant", default="bf16+fused", help="the variant whose curve is compared to fp32")
    ap.add_argument("--clips", type=int, default=64, help="clips in the curve's in-memory pool")
    ap.add_argument("--json", help="write the figures here too")
    return ap


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    data = base_config(args)
    if data.get("cpu_threads", 0) > 0:
        torch.set_num_threads(data["cpu_threads"])
    source = args.config or f"{args.recipe} --phase {args.phase}"
    report: dict[str, Any] = {"config": source, "sets": args.set, "demo_set_weights": not args.keep_paths,
                              **cpu_report()}
    print(json.dumps({k: report[k] for k in ("cpu_capability", "avx512_bf16", "amx_tile", "bf16_problem", "torch",
                                             "threads")}))
    if args.curve:
        result = loss_curves(data, ["fp32", args.curve_variant], args.curve, args.clips)
        print_curves(result)
        report["curve"] = result
    else:
        names = [n.strip() for n in args.variants.split(",") if n.strip()]
        result = time_variants(data, names, args.rounds, args.warmup)
        print_table(result)
        report["timing"] = result
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
