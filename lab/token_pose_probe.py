"""How much of the driver's pose the frozen motion tokens carry: a Stage-1 run's heatmap head decodes each
held-out driving frame's own joints from its tokens, scored like make eval's retargeting rows (PCK@0.05 of
the frame side, mean error in pixels, all 62 joints that are visible).

The retargeter reads the same tokens, so this is a rough ceiling for what it can place without the identity
image's help (docs/training.md, "The 128-pixel demo domain").

    python -m lab.token_pose_probe [--run runs/demo128/stage1] [--count 16] [--size 128] [--frames 9]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from im_animation_core.data import SyntheticPairs
from im_animation_core.eval.token_probe import token_pose_probe
from im_animation_core.heatmap_head import HeatmapHead
from im_animation_core.tokenizer import MotionTokenizer
from im_animation_core.train.encoders import TokenizerEncoder

REPO = Path(__file__).resolve().parents[1]

HELDOUT_SEED = 2026  # make eval's retargeting pairs


def probe(run: Path, count: int, size: int, frames: int, thickness_scale: float, min_contrast: float) -> dict:
    tokenizer = MotionTokenizer.from_file(run / "motion_tokenizer.safetensors", dtype=torch.float32)
    head = HeatmapHead.from_file(run / "heatmap_head.safetensors").eval()
    encoder = TokenizerEncoder(tokenizer, 0.25, 0).eval()
    data = SyntheticPairs("heldout", num_samples=count, frames=frames, size=size, seed=HELDOUT_SEED,
                          thickness_scale=thickness_scale, min_contrast=min_contrast)
    return token_pose_probe(encoder, head, data, count)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", default="runs/demo128/stage1", help="a Stage-1 output folder (tokenizer + head)")
    ap.add_argument("--count", type=int, default=16, help="held-out driving clips")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--frames", type=int, default=9)
    ap.add_argument("--thickness-scale", type=float, default=2.0)
    ap.add_argument("--min-contrast", type=float, default=0.3)
    args = ap.parse_args()
    torch.set_num_threads(1)
    scores = probe(Path(args.run), args.count, args.size, args.frames, args.thickness_scale, args.min_contrast)
    print(json.dumps({"run": args.run, "clips": args.count, "frames": args.frames, "size": args.size, **scores}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
