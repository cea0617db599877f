"""Motion tokenizer benchmark: fast inference path vs the plain float32 reference of the released semantics.

Run from the repository root:  python -m bench.bench_tokenizer [--sizes large small] [--batches 1 16]
    [--iters 2] [--device cpu|cuda] [--threads N]

For every (size, batch) it encodes the same frames with (a) ``reference_encode`` (nn.MultiheadAttention
style, float32) and (b) ``MotionTokenizer.encode`` (SDPA, fused kernels; float32 on the CPU), alternating
the two so that a busy machine slows both alike. It prints frames/s (best of ``iters`` timed calls after one
warm-up), the process CPU seconds of that call, peak working memory above the weights, the ratio (b)/(a)
and how many token indices agree with (a). On CUDA it also times the fast path in fp16 and bf16 and prints
TFLOP/s against the FLOP count (the floor of the work).
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

import im_animation_core.tokenizer.model as tokenizer_model
from im_animation_core.tokenizer import MotionTokenizer, MotionTokenizerConfig, reference_encode
from im_animation_core.tokenizer.testing import random_state_dict

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
    """One warm-up each, then ``iters`` rounds calling each function in turn.

    Records per call the wall seconds, the process CPU seconds and the peak memory (MiB).
    """
    results = {name: {"wall": [], "cpu": [], "peak": 0.0, "indices": None} for name in calls}
    for name, fn in calls.items():
        results[name]["indices"] = fn().cpu()
    for _ in range(iters):
        for name, fn in calls.items():
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


def _without_onednn(fn: Callable[[], torch.Tensor]) -> torch.Tensor:
    saved = tokenizer_model.USE_ONEDNN
    tokenizer_model.USE_ONEDNN = False
    try:
        return fn()
    finally:
        tokenizer_model.USE_ONEDNN = saved


def bench_size(name: str, config: MotionTokenizerConfig, batches: list[int], iters: int,
               device: torch.device, half: bool) -> list[dict]:
    sd = random_state_dict(config, seed=0)
    sd = {k: v.to(device) for k, v in sd.items()}
    fast = MotionTokenizer.from_state_dict(sd, device=device, dtype=torch.float32)
    models = {}
    if half and device.type == "cuda":
        for dtype in (torch.float16, torch.bfloat16):
            label = str(dtype).replace("torch.", "")
            models[label] = MotionTokenizer.from_state_dict(sd, device=device, dtype=dtype)
    rows = []
    for batch in batches:
        x = frames(batch, seed=batch).to(device)
        calls = {
            "reference fp32": lambda x=x: reference_encode(sd, x, config)[1],
            "fast fp32": lambda x=x: fast.encode(x).indices,
        }
        if device.type == "cpu":  # ablation: the fast path with F.linear/addmm instead of oneDNN kernels
            calls["fast, no oneDNN"] = lambda x=x: _without_onednn(lambda: fast.encode(x).indices)
        for label, model in models.items():
            calls[f"fast {label}"] = lambda x=x, model=model: model.encode(x).indices
        res = run_alternating(calls, iters, device)
        ref = res["reference fp32"]
        for label, r in res.items():
            best = min(r["wall"])
            rows.append({
                "size": name, "batch": batch, "path": label, "fps": batch / best, "wall": best,
                "cpu": min(r["cpu"]), "walls": r["wall"], "peak_mib": r["peak"],
                "ratio": min(ref["wall"]) / best, "cpu_ratio": min(ref["cpu"]) / min(r["cpu"]),
                "match": (r["indices"] == ref["indices"]).float().mean().item(),
                "tflops": flops_per_frame(config) * batch / best / 1e12,
            })
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["small", "large"], choices=sorted(SIZES))
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 16])
    parser.add_argument("--iters", type=int, default=2, help="timed calls per path after one warm-up")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    where = (torch.cuda.get_device_name(device) if device.type == "cuda"
             else f"{platform.machine()}, {os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads")
    print(f"torch {torch.__version__}, device {device} ({where}), load average {os.getloadavg()[0]:.2f}")
    header = (f"{'size':6} {'batch':>5} {'path':15} {'frames/s':>9} {'wall s':>8} {'cpu s':>8} "
              f"{'peak MiB':>9} {'x ref':>6} {'x ref cpu':>9} {'idx match':>9} {'TFLOP/s':>8}")
    print(header)
    print("-" * len(header))
    for name in args.sizes:
        config = SIZES[name]
        print(f"# {name}: width {config.width}, {config.layers} layers, {config.heads} heads; "
              f"{flops_per_frame(config) / 1e9:.1f} GFLOP per frame")
        for row in bench_size(name, config, args.batches, args.iters, device, half=True):
            print(f"{row['size']:6} {row['batch']:>5} {row['path']:15} {row['fps']:>9.2f} "
                  f"{row['wall']:>8.3f} {row['cpu']:>8.3f} {row['peak_mib']:>9.0f} {row['ratio']:>6.2f} "
                  f"{row['cpu_ratio']:>9.2f} {row['match'] * 100:>8.2f}% {row['tflops']:>8.3f}", flush=True)
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
