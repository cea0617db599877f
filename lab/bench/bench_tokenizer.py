"""Motion tokenizer benchmark: fast inference path vs the plain float32 reference of the released semantics.

Run from the repository root:  python -m lab.bench.bench_tokenizer [--sizes large small] [--batches 1 16]
    [--iters 4] [--device cpu|cuda] [--threads N]

For every (size, batch) it encodes the same frames with (a) ``reference_encode`` (nn.MultiheadAttention
style, float32) and (b) ``MotionTokenizer.encode`` (SDPA, fused kernels; float32 on the CPU), alternating
the paths (their order rotated each round) so that a busy machine slows all alike. It prints frames/s (best
of ``iters`` timed calls after one warm-up), the process CPU seconds of that call, peak working memory above
the weights, the ratio (b)/(a), how many token indices agree with (a), and GFLOP/s by the released FLOP count
(all positions in all blocks).

On the CPU, (b) runs three ways: with its timed per-shape kernel choice (``fast fp32``) and with each linear
kernel forced (``IMA_LINEAR_KERNEL=onednn`` / ``aten``); "x best kernel" is the better forced row's wall
time over the row's own, so the timed choice should read >= 1.00. The same run measures the machine's fp32
GEMM rate on the tokenizer's own linear shapes (the four GEMMs of a block at batch x sequence rows, with
``torch.mm``, ``F.linear`` and oneDNN's linear, the fastest per shape), and "% GEMM" is each row's GFLOP/s
as a share of it. The CPU model is read from /proc/cpuinfo. On CUDA it also times the fast path in fp16 and
bf16.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import os
import platform
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

import im_animation_core.tokenizer.linear_kernels as linear_kernels
from im_animation_core.tokenizer import MotionTokenizer, MotionTokenizerConfig, reference_encode
from im_animation_core.tokenizer.testing import random_state_dict

FORCED_LABELS = {"aten": "F.linear", "onednn": "oneDNN"}

SIZES = {
    "large": MotionTokenizerConfig.large(),
    "small": MotionTokenizerConfig.small(),
}


def flops_per_frame(config: MotionTokenizerConfig) -> float:
    """Multiply-adds x 2 of one frame's encoder pass (all positions in every block, as released)."""
    s, w = config.seq_len, config.width
    hidden = w * config.mlp_ratio
    per_layer = 2 * s * w * 3 * w + 2 * 2 * s * s * w + 2 * s * w * w + 2 * 2 * s * w * hidden
    patch = 2 * config.num_patches * 3 * config.patch_size ** 2 * w
    return float(config.layers * per_layer + patch)


def frames(n: int, seed: int = 0) -> torch.Tensor:
    """[n,3,256,256] smooth random images in [0,1]."""
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, 8, 8, generator=gen)
    x = F.interpolate(coarse, size=(256, 256), mode="bicubic", align_corners=False)
    x = x * torch.rand(n, 1, 1, 1, generator=gen) + 0.1 * torch.rand(n, 3, 256, 256, generator=gen)
    return x.clamp(0, 1)


# ---- memory ---------------------------------------------------------------------------------------------
def _status_mib(field: str) -> float:
    with open("/proc/self/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _trim_heap() -> None:
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class PeakMemory:
    """Peak memory (MiB) of one call above what was in use before it: RSS on the CPU (Linux), allocator
    peak on CUDA."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.peak_mib = float("nan")

    def __enter__(self) -> PeakMemory:
        _trim_heap()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.before = torch.cuda.memory_allocated(self.device) / 2**20
        else:
            try:
                with open("/proc/self/clear_refs", "w", encoding="ascii") as handle:
                    handle.write("5")  # reset VmHWM to the current RSS
            except OSError:
                pass
            self.before = _status_mib("VmRSS")
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_mib = torch.cuda.max_memory_allocated(self.device) / 2**20 - self.before
        else:
            self.peak_mib = _status_mib("VmHWM") - self.before


# ---- timing ---------------------------------------------------------------------------------------------
def run_alternating(calls: dict[str, Callable[[], torch.Tensor]], iters: int,
                    device: torch.device) -> dict[str, dict]:
    """One warm-up each, then ``iters`` rounds calling each function in turn, the order rotated by one per
    round: a call can run slower right after a particular other one (the reference frees large temporaries
    that the next call faults back in), so each function follows each other one equally often.

    Records per call the wall seconds, the process CPU seconds and the peak memory (MiB).
    """
    results = {name: {"wall": [], "cpu": [], "peak": 0.0, "indices": None} for name in calls}
    for name, fn in calls.items():
        results[name]["indices"] = fn().cpu()
    order = list(calls.items())
    for round_ in range(iters):
        shift = round_ % len(order)
        for name, fn in order[shift:] + order[:shift]:
            with PeakMemory(device) as mem:
                cpu0, wall0 = time.process_time(), time.perf_counter()
                fn()
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
            results[name]["wall"].append(wall)
            results[name]["cpu"].append(cpu)
            results[name]["peak"] = max(results[name]["peak"], mem.peak_mib)
    return results


def _forced(kernel: str, fn: Callable[[], torch.Tensor]) -> torch.Tensor:
    saved = os.environ.get(linear_kernels.ENV_VAR)
    os.environ[linear_kernels.ENV_VAR] = kernel
    try:
        return fn()
    finally:
        if saved is None:
            del os.environ[linear_kernels.ENV_VAR]
        else:
            os.environ[linear_kernels.ENV_VAR] = saved


# ---- the machine's GEMM rate ----------------------------------------------------------------------------
def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (else what the platform module knows)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def linear_shapes(config: MotionTokenizerConfig) -> list[tuple[int, int]]:
    """(in, out) features of a block's four linear layers: q/k/v, out_proj, c_fc, c_proj."""
    w, hidden = config.width, config.width * config.mlp_ratio
    return [(w, 3 * w), (w, w), (w, hidden), (hidden, w)]


def gemm_rate(config: MotionTokenizerConfig, rows: int, iters: int) -> dict[str, float]:
    """fp32 GFLOP/s on a block's four GEMMs at ``rows`` rows, by kernel: ``torch.mm``, ``F.linear``
    (with bias), oneDNN's linear (when it runs here), and ``best`` (the fastest kernel per shape).

    Each rate is the four shapes' FLOPs over the sum of their times, a block's mix of shapes; times are the
    best of ``iters`` calls after one warm-up, the kernels alternating.
    """
    gen = torch.Generator().manual_seed(0)
    kernels: dict[str, Callable] = {
        "mm": lambda x, w, b: torch.mm(x, w.t()),
        "F.linear": lambda x, w, b: F.linear(x, w, b),
    }
    if linear_kernels.onednn_linear_available():
        kernels["oneDNN"] = lambda x, w, b: linear_kernels.onednn_linear(x, w, b, "none")
    total_flops = 0.0
    seconds = dict.fromkeys([*kernels, "best"], 0.0)
    for k, n in linear_shapes(config):
        x = torch.randn(rows, k, generator=gen)
        w, b = torch.randn(n, k, generator=gen) * k ** -0.5, torch.randn(n, generator=gen)
        best = dict.fromkeys(kernels, float("inf"))
        for call in range(1 + iters):
            for name, fn in kernels.items():
                start = time.perf_counter()
                fn(x, w, b)
                if call:
                    best[name] = min(best[name], time.perf_counter() - start)
        for name in kernels:
            seconds[name] += best[name]
        seconds["best"] += min(best.values())
        total_flops += 2.0 * rows * k * n
    return {name: total_flops / s / 1e9 for name, s in seconds.items()}


def bench_size(name: str, config: MotionTokenizerConfig, batches: list[int], iters: int,
               device: torch.device, half: bool) -> list[dict]:
    sd = random_state_dict(config, seed=0)
    sd = {k: v.to(device) for k, v in sd.items()}
    fast = MotionTokenizer.from_state_dict(sd, config=config, device=device, dtype=torch.float32)
    models = {}
    if half and device.type == "cuda":
        for dtype in (torch.float16, torch.bfloat16):
            label = str(dtype).replace("torch.", "")
            models[label] = MotionTokenizer.from_state_dict(sd, config=config, device=device, dtype=dtype)
    rows = []
    for batch in batches:
        x = frames(batch, seed=batch).to(device)
        gemm = gemm_rate(config, batch * config.seq_len, max(iters, 2)) if device.type == "cpu" else {}
        calls = {
            "reference fp32": lambda x=x: reference_encode(sd, x, config)[1],
            "fast fp32": lambda x=x: fast.encode(x).indices,
        }
        forced = []
        if device.type == "cpu":  # the timed kernel choice against each kernel alone
            kernels = ["aten"] + (["onednn"] if linear_kernels.onednn_linear_available() else [])
            for kernel in kernels:
                label = f"fast, {FORCED_LABELS[kernel]}"
                calls[label] = lambda x=x, kernel=kernel: _forced(kernel, lambda: fast.encode(x).indices)
                forced.append(label)
        for label, model in models.items():
            calls[f"fast {label}"] = lambda x=x, model=model: model.encode(x).indices
        res = run_alternating(calls, iters, device)
        ref = res["reference fp32"]
        best_forced = min((min(res[label]["wall"]) for label in forced), default=float("nan"))
        for label, r in res.items():
            best = min(r["wall"])
            gflops = flops_per_frame(config) * batch / best / 1e9
            rows.append({
                "size": name, "batch": batch, "path": label, "fps": batch / best, "wall": best,
                "cpu": min(r["cpu"]), "walls": r["wall"], "peak_mib": r["peak"],
                "ratio": min(ref["wall"]) / best, "cpu_ratio": min(ref["cpu"]) / min(r["cpu"]),
                "match": (r["indices"] == ref["indices"]).float().mean().item(),
                "gflops": gflops, "gemm": gemm, "gemm_share": gflops / gemm["best"] if gemm else float("nan"),
                "x_best_kernel": best_forced / best if label.startswith("fast") and forced else float("nan"),
            })
    return rows


def _fmt(value: float, spec: str, width: int) -> str:
    return f"{'-':>{width}}" if value != value else f"{value:>{width}{spec}}"  # NaN -> "-"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["small", "large"], choices=sorted(SIZES))
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 16])
    parser.add_argument("--iters", type=int, default=4,
                        help="timed calls per path after one warm-up (4: each of the CPU's four paths goes first once)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    where = (torch.cuda.get_device_name(device) if device.type == "cuda"
             else f"{cpu_model()}, {platform.machine()}, {os.cpu_count()} CPUs, "
                  f"{torch.get_num_threads()} torch threads")
    print(f"torch {torch.__version__}, device {device} ({where}), load average {os.getloadavg()[0]:.2f}")
    if device.type == "cpu":
        available = linear_kernels.onednn_linear_available()
        print(f"oneDNN linear: {'available' if available else 'not available (probe failed or op missing)'}"
              f"; {linear_kernels.ENV_VAR}={os.environ.get(linear_kernels.ENV_VAR, 'auto')}")
    header = (f"{'size':6} {'batch':>5} {'path':15} {'frames/s':>9} {'wall s':>8} {'cpu s':>8} "
              f"{'peak MiB':>9} {'x ref':>6} {'x ref cpu':>9} {'idx match':>9} {'GFLOP/s':>8} {'% GEMM':>7} "
              f"{'x best kernel':>13}")
    print(header)
    print("-" * len(header))
    for name in args.sizes:
        config = SIZES[name]
        print(f"# {name}: width {config.width}, {config.layers} layers, {config.heads} heads; "
              f"{flops_per_frame(config) / 1e9:.1f} GFLOP per frame")
        last = None
        for row in bench_size(name, config, args.batches, args.iters, device, half=True):
            if row["gemm"] and row["batch"] != last:
                rates = ", ".join(f"{k} {v:.0f}" for k, v in row["gemm"].items())
                print(f"# GEMM GFLOP/s at {row['batch'] * config.seq_len} rows (a block's 4 shapes): {rates}")
            last = row["batch"]
            print(f"{row['size']:6} {row['batch']:>5} {row['path']:15} {row['fps']:>9.2f} "
                  f"{row['wall']:>8.3f} {row['cpu']:>8.3f} {row['peak_mib']:>9.0f} {row['ratio']:>6.2f} "
                  f"{row['cpu_ratio']:>9.2f} {row['match'] * 100:>8.2f}% {row['gflops']:>8.1f} "
                  f"{_fmt(row['gemm_share'] * 100, '.0f', 6)}% {_fmt(row['x_best_kernel'], '.2f', 13)}",
                  flush=True)
    choices = linear_kernels.kernel_choices()
    if choices:
        print(f"timed kernel choices ({sum(c.cost_s for c in choices.values()) * 1e3:.0f} ms of timing in all):")
        for (shape, bucket, _dtype, threads, epilogue), c in sorted(choices.items(), key=str):
            times = ", ".join(f"{k} {v * 1e3:.2f} ms" for k, v in c.seconds.items())
            print(f"  weight {list(shape)} rows {c.rows} (bucket {bucket}) {epilogue:4} {threads} threads: "
                  f"{c.kernel:6} ({times}; {c.cost_s * 1e3:.0f} ms)")
    print(f"load average after: {os.getloadavg()[0]:.2f}")

if __name__ == "__main__":
    main()
