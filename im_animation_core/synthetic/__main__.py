"""Rendering speed of the synthetic characters: ``python -m im_animation_core.synthetic [--threads N]
[--frames T] [--sizes 64 128 256] [--preview out.png]``. Prints one line of frames/s per size."""

from __future__ import annotations

import argparse
import time

import torch

from .render import render_sample
from .sampling import sample_identity, sample_motion


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads while rendering (default 1)")
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--preview", help="write a PNG strip of the first size's frames (needs Pillow)")
    args = parser.parse_args(argv)
    g = torch.Generator().manual_seed(args.seed)
    identities = [sample_identity(g) for _ in range(args.repeats)]
    motions = [sample_motion(g) for _ in range(args.repeats)]
    for size in args.sizes:
        render_sample(identities[0], motions[0], 2, size, size, threads=args.threads)  # warm-up
        times = []
        for ident, motion in zip(identities, motions, strict=True):
            t0 = time.perf_counter()
            render_sample(ident, motion, args.frames, size, size, threads=args.threads)
            times.append(time.perf_counter() - t0)
        times.sort()
        print(f"{size}x{size}: {args.frames / times[len(times) // 2]:.0f} frames/s (median of {args.repeats} clips "
              f"of {args.frames} frames, {args.threads} thread(s))")
    if args.preview:
        from PIL import Image

        out = render_sample(identities[0], motions[0], 8, args.sizes[0], args.sizes[0])
        strip = torch.cat(list(out.frames), dim=1)
        Image.fromarray((strip * 255).round().to(torch.uint8).numpy()).save(args.preview)
        print(f"wrote {args.preview}")


if __name__ == "__main__":
    main()
