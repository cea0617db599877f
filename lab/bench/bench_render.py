"""Frames per second of the synthetic renderer on one thread, at 64x64 and 128x128 (the demo domains).

    python -m lab.bench.bench_render
"""

from __future__ import annotations

import math
import time

import torch

from im_animation_core.synthetic import render_sample, sample_identity, sample_motion


def main() -> int:
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(2)
    identity, motion = sample_identity(gen), sample_motion(torch.Generator().manual_seed(2), kind="wave")
    for size in (64, 128):
        render_sample(identity, motion, 4, size, size)
        best = math.inf
        for _ in range(3):
            t0 = time.perf_counter()
            render_sample(identity, motion, 32, size, size)
            best = min(best, time.perf_counter() - t0)
        print(f"synthetic render {size}x{size}: {32 / best:.0f} frames/s (one thread, best of 3 x 32 frames)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
