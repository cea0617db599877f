"""Per-step time of the IM-Animation-patched Wan model over the unpatched one: same model, inputs, seed.

Both run in one process on ComfyUI's own code: the unpatched side is KSampler (nodes.common_ksampler) on
the latent the sampler builds; the patched side is the Wan2.2 IM-Animation Sampler (motion channels +
expression blocks). Runs alternate and the median per-step time of each is reported, and the median of the
ratios paired within each repeat with its 95% distribution-free interval, against --target (lab/bench/paired.py).

    python -m lab.bench.bench_injection [--dim 256 --layers 6 --frames 5 --size 16 --steps 4 --repeats 5]
    python -m lab.bench.bench_injection --flops [...]   # per-step FLOPs and aten op counts instead of times
    python -m lab.bench.bench_injection --profile [...] # cProfile of one --steps call of each side instead
    python -m lab.bench.bench_injection --instructions [...]  # instructions per step under valgrind (needs valgrind)

--instructions counts what each side executes per step (valgrind's cachegrind, one thread, four child
processes: each side at --steps and 2x --steps, differenced), a figure that does not move with how busy the
machine is; it runs about 50x slower than native, so keep --steps small.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from lab.bench.paired import median_interval, per_repeat_ratios, verdict

REPO = Path(__file__).resolve().parents[2]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--channels", type=int, default=48)
    ap.add_argument("--frames", type=int, default=5, help="output latent frames")
    ap.add_argument("--size", type=int, default=16, help="latent height and width")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--target", type=float, default=1.05,
                    help="the per-step ratio patched/unpatched to test the paired interval against")
    ap.add_argument("--flops", action="store_true",
                    help="count the FLOPs of one sampling step on each side instead of timing")
    ap.add_argument("--profile", action="store_true",
                    help="cProfile one call of --steps steps on each side instead of timing")
    ap.add_argument("--instructions", action="store_true",
                    help="count the instructions per step of each side under valgrind instead of timing")
    ap.add_argument("--side", choices=("patched", "unpatched"),
                    help="run one 1-step warm-up and one --steps call of this side only (what --instructions "
                         "runs under valgrind)")
    args = ap.parse_args()
    if args.instructions:
        count_instructions(args)
        return

    from tools.fixture_models import tiny_modules, tiny_wan_dit_state_dict
    from tools.inprocess import PACKAGE, load_pack, stock_first_frame_latent

    load_pack()
    import importlib

    import comfy.sd

    import nodes

    sampler = importlib.import_module(f"{PACKAGE}.nodes.sampler")
    core = importlib.import_module(f"{PACKAGE}.im_animation_core")
    devices = importlib.import_module(f"{PACKAGE}.nodes.devices")

    c, f, size = args.channels, args.frames, args.size
    model = comfy.sd.load_diffusion_model_state_dict(tiny_wan_dit_state_dict(
        seed=0, dim=args.dim, ffn_dim=args.dim * 4, num_layers=args.layers, in_dim=c, out_dim=c))
    modules = tiny_modules(seed=0, latent_channels=c, dim=args.dim, depth=args.layers)
    patcher = devices.patcher_for(modules.eval())
    length = (f - 1) * 4 + 1
    g = torch.Generator().manual_seed(0)
    identity = torch.randn(1, c, 1, size, size, generator=g)
    motion = torch.randn(1, 8, f, size, size, generator=g)
    rm = core.pipeline.RetargetedMotion(motion, identity, length, size * 16, size * 16, 24.0, patcher)
    expression = core.pipeline.ExpressionFeatures(torch.randn(length, 4, 32, generator=g), patcher)
    stock_latent = stock_first_frame_latent(model, identity, f)
    text_dim = model.get_model_object("diffusion_model").text_embedding[0].in_features
    empty = importlib.import_module(f"{PACKAGE}.nodes.conditioning").empty_conditioning(text_dim)

    def patched(steps):
        sampler.IMAnimationSampler.execute(model, rm, seed=1, steps=steps, cfg=1.0, sampler_name="euler",
                                           scheduler="simple", expression=expression)

    def unpatched(steps):
        nodes.common_ksampler(model, 1, steps, 1.0, "euler", "simple", empty, empty,
                              stock_latent)

    if args.side:
        fn = patched if args.side == "patched" else unpatched
        fn(1)
        fn(args.steps)
        return
    if args.flops:
        count_flops(patched, unpatched, args)
        return
    if args.profile:
        profile_calls(patched, unpatched, args)
        return

    # A sampling call = fixed setup (patching, loading, conditioning) + steps x per-step time. Timing calls
    # of S and 2S steps and taking the difference gives the per-step time without the setup.
    # Besides wall time, the process's CPU time and minor page faults per step: CPU time tells work from
    # waiting, and page faults show memory the allocator handed back to the OS and took again.
    times = {(name, n): [] for name in ("unpatched", "patched") for n in (args.steps, 2 * args.steps)}
    cpu = {k: [] for k in times}
    faults = {k: [] for k in times}
    patched(1), unpatched(1)  # warm-up
    # In a fixed call order the page faults of memory the allocator handed back and took again fell on the
    # same two calls in every repeat (the unpatched short and the patched long one: -126 and +130 faults per
    # step), biasing both per-step differences the same way, towards a higher ratio. A seeded shuffle per
    # repeat spreads them over all four calls (0 and 0 per step since).
    order, rng = list(times), random.Random(0)
    for _ in range(args.repeats):
        rng.shuffle(order)
        for name, n in order:
            bucket = times[(name, n)]
            fn = patched if name == "patched" else unpatched
            f0, c0, t = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.process_time(), time.perf_counter()
            fn(n)
            bucket.append(time.perf_counter() - t)
            cpu[(name, n)].append(time.process_time() - c0)
            faults[(name, n)].append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
    s = args.steps

    def per_step(samples):
        med = {k: statistics.median(v) for k, v in samples.items()}
        return {name: (med[(name, 2 * s)] - med[(name, s)]) / s for name in ("unpatched", "patched")}, med

    step, med = per_step(times)
    cpu_step, _ = per_step(cpu)
    fault_step, _ = per_step(faults)
    setup = {name: med[(name, s)] - s * step[name] for name in ("unpatched", "patched")}
    print(f"{config_line(args)}, {s} and {2 * s} steps, {args.repeats} repeats, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    print(f"per step:  unpatched {step['unpatched'] * 1000:.1f} ms   patched {step['patched'] * 1000:.1f} ms")
    print(f"per call (setup):  unpatched {setup['unpatched'] * 1000:.0f} ms   patched {setup['patched'] * 1000:.0f} ms")
    print(f"per-step ratio patched/unpatched: {step['patched'] / step['unpatched']:.3f}")
    print(f"CPU time per step (all threads):  unpatched {cpu_step['unpatched'] * 1000:.1f} ms   patched "
          f"{cpu_step['patched'] * 1000:.1f} ms   ratio {cpu_step['patched'] / cpu_step['unpatched']:.3f}")
    print(f"minor page faults per step:  unpatched {fault_step['unpatched']:.0f}   patched {fault_step['patched']:.0f}")
    # Other jobs and the hypervisor only ever add time, so the fastest of the repeats is the estimate least
    # moved by a busy machine (the median above is the one comparable with earlier rows).
    fast = {k: min(v) for k, v in times.items()}
    fast_step = {name: (fast[(name, 2 * s)] - fast[(name, s)]) / s for name in ("unpatched", "patched")}
    print(f"per step from the fastest repeats:  unpatched {fast_step['unpatched'] * 1000:.1f} ms   patched "
          f"{fast_step['patched'] * 1000:.1f} ms   ratio {fast_step['patched'] / fast_step['unpatched']:.3f}")
    # The two sides of one repeat ran seconds apart, so their ratio cancels the machine's slower drifts.
    ratios = per_repeat_ratios(times[("unpatched", s)], times[("unpatched", 2 * s)],
                               times[("patched", s)], times[("patched", 2 * s)], s)
    mid, low, high = median_interval(ratios)
    print(f"paired per-repeat ratio: median {mid:.3f}, 95% interval [{low:.3f}, {high:.3f}] over {len(ratios)} "
          f"repeats; target <= {args.target}: {verdict(low, high, args.target)}")


def config_line(args) -> str:
    """The model and latent the figures were measured on (the reference frame counts as a latent frame)."""
    tokens = (1 + args.frames) * (args.size // 2) ** 2
    return (f"config: dim {args.dim}, {args.layers} layers, {args.channels} channels, {1 + args.frames} latent "
            f"frames of {args.size}x{args.size} ({tokens} tokens)")


def profile_calls(patched, unpatched, args) -> None:
    """cProfile of one sampling call of ``args.steps`` steps per side (after a 2-step warm-up of each): the
    total time of each call and the functions with the most own time."""
    import cProfile
    import pstats

    patched(2), unpatched(2)
    for name, fn in (("unpatched", unpatched), ("patched", patched)):
        profiler = cProfile.Profile()
        profiler.enable()
        fn(args.steps)
        profiler.disable()
        print(f"===== {name}, {args.steps} steps")
        pstats.Stats(profiler).sort_stats("tottime").print_stats(14)


def count_flops(patched, unpatched, args) -> None:
    """Per-step work of each side that does not depend on how busy the machine is: FLOPs as torch's
    FlopCounterMode counts them (GEMMs, convolutions, attention; not elementwise work or norms) and the
    number of aten ops dispatched. A 2-step call minus a 1-step call, so the per-call setup cancels out."""
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils.flop_counter import FlopCounterMode

    class OpCounter(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.ops = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.ops += 1
            return func(*args, **(kwargs or {}))

    def work(fn, steps):
        # Two passes: nested under FlopCounterMode the op counter would also see the ops of its bookkeeping.
        flops, ops = FlopCounterMode(display=False), OpCounter()
        with flops:
            fn(steps)
        with ops:
            fn(steps)
        return flops.get_total_flops(), ops.ops, flops.get_flop_counts().get("Global", {})

    per_step, by_op = {}, {}
    for name, fn in (("unpatched", unpatched), ("patched", patched)):
        flops_1, ops_1, _ = work(fn, 1)
        flops_2, ops_2, counts = work(fn, 2)
        per_step[name] = (flops_2 - flops_1, ops_2 - ops_1)
        by_op[name] = {str(op): n for op, n in counts.items()}
    print(config_line(args))
    for name, (flops, ops) in per_step.items():
        print(f"per step {name}: {flops / 1e6:.1f} MFLOP, {ops} aten ops")
    (flops_u, ops_u), (flops_p, ops_p) = per_step["unpatched"], per_step["patched"]
    print(f"per-step ratio patched/unpatched: FLOPs {flops_p / flops_u:.3f}, aten ops {ops_p / ops_u:.3f}")
    for name, ops in by_op.items():  # whole 2-step calls, setup included
        print(f"{name} (2-step call) by op, MFLOP: "
              + ", ".join(f"{op} {n / 1e6:.1f}" for op, n in sorted(ops.items())))


def count_instructions(args) -> None:
    """Instructions per sampling step of each side, from valgrind's cachegrind over a whole child process
    running that side (``--side``) for S and 2S steps: the difference over S cancels the imports and setup.
    One thread and a fixed hash seed keep the children deterministic. Valgrind reports a CPU without
    AVX-512, so the kernels counted are the AVX2 ones."""
    if shutil.which("valgrind") is None:
        raise SystemExit("--instructions needs valgrind on PATH (Debian: apt-get install valgrind)")
    config = ["--dim", str(args.dim), "--layers", str(args.layers), "--channels", str(args.channels),
              "--frames", str(args.frames), "--size", str(args.size)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}
    counts = {}
    for side in ("unpatched", "patched"):
        for n in (args.steps, 2 * args.steps):
            cmd = ["valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null",
                   sys.executable, "-m", "lab.bench.bench_injection", "--side", side, "--steps", str(n), *config]
            run = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
            found = re.search(r"I\s+refs:\s+([\d,]+)", run.stderr)
            if run.returncode != 0 or not found:
                raise SystemExit(f"valgrind run failed ({' '.join(cmd)}):\n{run.stderr[-2000:]}")
            counts[(side, n)] = int(found.group(1).replace(",", ""))
            print(f"{side}, {n} steps: {counts[(side, n)]:,} instructions (whole process)", flush=True)
    s = args.steps
    step = {side: (counts[(side, 2 * s)] - counts[(side, s)]) / s for side in ("unpatched", "patched")}
    print(f"{config_line(args)}, {s} and {2 * s} steps, torch {torch.__version__}")
    print(f"instructions per step:  unpatched {step['unpatched'] / 1e6:.2f} M   patched {step['patched'] / 1e6:.2f} M"
          f"   ratio {step['patched'] / step['unpatched']:.3f}")


if __name__ == "__main__":
    main()
