"""Stage-3 step time on live clips vs the clip cache (train.cache), and the DiT's share of a step.

One process, the same config, DiT and clips for both trainers: the demo's Stage-3 sizes (fresh DiT of
--dim x --layers, fresh modules of the demo sizes, the committed demo tokenizer and VAE) on synthetic
--size x --size clips of --frames frames. Steps are timed by the trainer itself (sec_per_step in its
metrics.jsonl, data loading included); the median over steps 2.. is reported. The DiT's share is the median
time of the DiT's forward + backward alone on a step's inputs (batch x draws clips) over the step's time.
Rows: live clips (the trainer as it was), the clip cache, and the cache with a frozen retargeter
(retarget_trainable false: its motion maps cached too), each at every --draws value.

    python -m lab.bench.bench_stage3_cache [--size 128] [--frames 17] [--batch 4] [--draws 1,8] [--steps 12]
                                       [--dim 128] [--layers 6] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
TOKENIZER = REPO / "models" / "im_animation" / "ima_demo_motion_tokenizer.safetensors"
VAE = REPO / "models" / "vae" / "ima_demo_wan21_vae.safetensors"
MODULES = {"retarget": {"width": 128, "depth": 4, "heads": 2, "out_channels": 8, "heatmap_channels": 256,
                        "heatmap_head": "pixel_shuffle"},
           "expression": {"crop_size": 32, "width": 64, "tokens": 4, "base_channels": 8}}


def config_dict(args, out: Path, cache: str, draws: int) -> dict:
    return {
        "output_dir": str(out), "seed": 0, "steps": args.steps, "batch_size": args.batch, "log_every": 1,
        "save_every": 100000, "progress": False, "device": "cpu", "cpu_threads": args.threads,
        "optim": {"lr": 2e-4, "warmup_steps": 1}, "dit_lr": 5e-4, "retarget_weight": 10.0, "text_len": 1,
        "moving_weight": 10.0, "dit_draws": draws, "reference": "clean", "heatmap_sigma": 2.0,
        "data": {"split": "train", "num_samples": args.steps * args.batch, "frames": args.frames, "size": args.size,
                 "seed": 2, "options": {"thickness_scale": 2.0, "min_contrast": 0.3}, "cache": cache},
        "tokenizer": {"path": str(TOKENIZER), "trainable": False},
        "modules": MODULES,
        "dit": {"dim": args.dim, "ffn_dim": 4 * args.dim, "num_layers": args.layers, "in_dim": 16, "out_dim": 16,
                "text_dim": 4096},
        "vae": {"path": str(VAE)},
    }


def step_times(run: Path) -> list[float]:
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return [r["sec_per_step"] for r in lines if "sec_per_step" in r][1:]  # step 1 warms up


def dit_seconds(trainer, batch_size: int, draws: int, frames: int, size: int, repeats: int = 5) -> float:
    """Median forward + backward time of the trainer's DiT alone on one step's inputs."""
    from im_animation_core.frames import latent_frame_count

    dit = trainer.model.dit
    b, f, h = batch_size * draws, 1 + latent_frame_count(frames), size // 8
    x = torch.randn(b, 16, f, h, h)
    motion = torch.randn(b, dit.motion_patch.weight.shape[1], f, h, h)
    t, ctx = torch.rand(b) * 1000, torch.zeros(b, 1, dit.config.text_dim)
    times = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        dit(x, t, ctx, motion=motion).float().pow(2).mean().backward()
        times.append(time.perf_counter() - start)
        trainer.optimizer.zero_grad(set_to_none=True)
    return statistics.median(times[1:])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--frames", type=int, default=17)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--draws", default="1,8", help="noise draws per clip, one row pair each")
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    from im_animation_core.train import Trainer, config_from_dict
    from im_animation_core.train.cache import build_cache

    torch.set_num_threads(args.threads)
    rows, builds = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        # the frozen-retargeter rows need the retargeter from a file: the fresh modules, exported once
        (tmp / "m").mkdir()
        Trainer("stage3", config_from_dict("stage3", config_dict(args, tmp / "m", "", 1))).stage.export(tmp / "m")
        frozen = {"retarget_trainable": False, "modules": {"path": str(tmp / "m" / "im_animation_modules.safetensors")}}
        for draws in (int(d) for d in args.draws.split(",")):
            for name, cached, over in (("live clips", False, {}), ("clip cache", True, {}),
                                       ("clip cache, frozen retargeter", True, frozen)):
                run = tmp / f"{name}{draws}".replace(" ", "_").replace(",", "")
                cache = str(tmp / ("cache_frozen" if over else "cache")) if cached else ""
                cfg = config_from_dict("stage3", {**config_dict(args, run, cache, draws), **over})
                if cached and cache not in builds:
                    start = time.perf_counter()
                    build_cache("stage3", cfg, log_fn=lambda _: None)
                    builds[cache] = (time.perf_counter() - start) / (args.steps * args.batch)
                trainer = Trainer("stage3", cfg)
                trainer.train()
                t = statistics.median(step_times(run))
                rows.append((name, draws, t, dit_seconds(trainer, args.batch, draws, args.frames, args.size)))

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    print(f"machine: {cpu}, {torch.get_num_threads()} torch threads, torch {torch.__version__}")
    print(f"setup: {args.size}x{args.size}, {args.frames} frames, batch {args.batch}, DiT dim {args.dim} x "
          f"{args.layers} blocks, {args.steps} steps per row (median of steps 2..)")
    print("| trainer | draws per clip | s/step | clips/hour | x live | DiT fwd+bwd share of the step |")
    print("|---|---:|---:|---:|---:|---:|")
    live = {d: t for name, d, t, _ in rows if name == "live clips"}
    for name, draws, t, t_dit in rows:
        print(f"| {name} | {draws} | {t:.3f} | {3600 * args.batch / t:.0f} | {live[draws] / t:.2f} | "
              f"{100 * min(t_dit / t, 1):.0f}% |")
    for cache, build in builds.items():
        print(f"cache build ({Path(cache).name}): {build:.3f} s per clip ({3600 / build:.0f} clips/hour)")


if __name__ == "__main__":
    main()
