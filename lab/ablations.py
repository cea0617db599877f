"""make ablations: the paper's Stage-2 ablations (Tables 2, 5, 6) on the demo's synthetic data, 3 seeds each.

Every variant starts from the same Stage-1 outputs and trains Stage 2 (the stage2 phase of configs/demo64.json)
with seeds 0, 1, 2 and, by default, the demo Stage 2's own budget (that config's steps and batch size: 1500 x 8);
only the switch under test differs. The motion encoder is frozen in every variant (as in that phase): trained
jointly with the retargeter at the predict-the-mean plateau, its codebook collapses (`first_recipe`,
docs/training.md).

    full             the paper's modules: 1D motion tokenizer + mask-token retargeting + heatmap supervision
    conv_encoder     a conv motion encoder instead of the 1D tokenizer (Table 5 / Table 2 exp. A), from the
                     conv Stage-1 run (phase stage1_conv of configs/demo64.json)
    self_attention   retargeting by self-attention without mask tokens (Table 6 / Table 2 exp. C)
    first_recipe     the first demo's Stage 2: the tokenizer trained jointly (the paper's Stage 2), upsample
                     heatmap head, sigma 1, random init. Its codebook collapses; kept because its seed-0 run
                     feeds the DiT warm-up (phase stage3_prior of configs/demo64.json). Run it as below (its own
                     budget)

Not here: Table 2 exp. D (no heatmap supervision). Without the heatmap loss Stage 2 has no loss at all (the
trainer refuses it); the ablation is a Stage-3 run with heatmap_supervision false per seed, which this CPU
cannot afford three times (see docs/results.md).

Outputs: runs/ablations/<variant>/seed<k>/ (what lab/eval.py --runs reads).

    python -m lab.ablations [--steps N] [--batch-size B] [--variants full,conv_encoder,...] [--seeds 0,1,2]

The first demo's Stage 2 had its own, shorter budget: python -m lab.ablations --variants first_recipe
--seeds 0 --steps 200 --batch-size 4
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from im_animation_core.train.outputs import run_finished

REPO = Path(__file__).resolve().parents[1]

VARIANTS: dict[str, list[str]] = {
    "full": [],
    "conv_encoder": ["motion_encoder=conv", "tokenizer.path=",
                     "conv_encoder.path=runs/demo/stage1_conv/conv_motion_encoder.safetensors",
                     "conv_encoder.trainable=false"],
    "self_attention": ["retarget=self_attention"],
    "first_recipe": ["tokenizer.trainable=true", "heatmap_sigma=1", "modules.retarget.heatmap_head=upsample",
                     "modules.retarget.heatmap_channels=32", "modules.retarget_init=default"],
}
DEFAULT_VARIANTS = ("full", "conv_encoder", "self_attention")  # the paper's


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, help="default: that of configs/demo64.json's stage2 phase")
    ap.add_argument("--batch-size", type=int, help="default: that of configs/demo64.json's stage2 phase")
    ap.add_argument("--variants", default=",".join(DEFAULT_VARIANTS))
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--out", default="runs/ablations")
    args = ap.parse_args()
    for variant in args.variants.split(","):
        if variant not in VARIANTS:
            print(f"unknown variant '{variant}'; choose from {', '.join(VARIANTS)}", file=sys.stderr)
            return 2
        for seed in (int(s) for s in args.seeds.split(",")):
            out = f"{args.out}/{variant}/seed{seed}"
            if run_finished(REPO / out):
                print(f"{out}: done already, skipped")
                continue
            sets = [f"output_dir={out}", f"seed={seed}", f"data.seed={100 + seed}", "save_every=100000",
                    *VARIANTS[variant]]
            if args.steps is not None:
                sets.append(f"steps={args.steps}")
            if args.batch_size is not None:
                sets.append(f"batch_size={args.batch_size}")
            cmd = [sys.executable, "-m", "im_animation_core.train", "stage2", "--recipe", "configs/demo64.json",
                   "--phase", "stage2"]
            for s in sets:
                cmd += ["--set", s]
            start = time.time()
            done = subprocess.run(cmd, cwd=REPO, stdout=subprocess.DEVNULL)
            print(f"{out}: exit {done.returncode} in {time.time() - start:.0f} s", flush=True)
            if done.returncode:
                return done.returncode
    return 0


if __name__ == "__main__":
    sys.exit(main())
