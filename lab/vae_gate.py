"""The VAE gate of a demo domain: held-out ground-truth clips through a VAE file, scored against themselves.

The domain (frame size, synthetic options) is read from a VAE training config, so the gate scores the clips
that VAE was trained for, drawn from the held-out split (identities and motions never seen in training).
Prints PSNR / SSIM / motion correlation (mean ± std over pairs) and whether the gate
(im_animation_core.eval.vae_gate.GATE) is met; --json PATH also writes them.

    python -m lab.vae_gate --recipe configs/demo128.json --phase vae16 [--vae FILE] [--pairs 16]
                               [--seed 2027] [--frames 17] [--json PATH]
    python -m lab.vae_gate --config VAE_CONFIG.json ...
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from im_animation_core.data import SyntheticPairs
from im_animation_core.eval.vae_gate import GATE, vae_gate_scores
from im_animation_core.train.recipe import recipe_phase_config
from im_animation_core.train.vae_stage import VAEStageConfig
from im_animation_core.wan.vae import load_wan_vae

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", help="a VAE training config (its data.size and data.options)")
    ap.add_argument("--recipe", help="instead of --config: a recipe file, with --phase (a vae phase)")
    ap.add_argument("--phase", help="the recipe's VAE phase")
    ap.add_argument("--vae", help="the VAE file to score (default: the config's output)")
    ap.add_argument("--pairs", type=int, default=16)
    ap.add_argument("--seed", type=int, default=2027, help="the held-out pairs' generator seed")
    ap.add_argument("--frames", type=int, default=17)
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args(argv)
    if bool(args.recipe) == bool(args.config) or bool(args.recipe) != bool(args.phase):
        ap.error("name the VAE's training config: --config FILE, or --recipe FILE --phase NAME")
    if args.recipe:
        data, named = recipe_phase_config(args.recipe, args.phase)[1], f"--recipe {args.recipe} --phase {args.phase}"
    else:
        data, named = json.loads(Path(args.config).read_text()), f"--config {args.config}"
    cfg = VAEStageConfig.from_dict(data)
    vae_path = args.vae or cfg.output
    if not Path(vae_path).is_file():
        print(f"--vae: no VAE file at {vae_path}; train it first (python -m im_animation_core.train vae "
              f"{named}) or pass --vae", file=sys.stderr)
        return 2
    pairs = SyntheticPairs("heldout", args.pairs, args.frames, cfg.data.size, args.seed, **cfg.data.options)
    scores = vae_gate_scores(load_wan_vae(vae_path), pairs)
    head = {"vae": vae_path, "clips": {"size": cfg.data.size, "frames": args.frames, "pairs": args.pairs,
                                       "seed": args.seed, "options": cfg.data.options}, "gate": GATE}
    for k in ("psnr", "ssim", "motion_corr"):
        s = scores[k]
        print(f"{k}: {s['mean']:.3f} ± {s['std']:.3f}" + (f" (gate >= {GATE[k]})" if k in GATE else ""))
    print("gate:", "met" if scores["passes"] else "NOT met")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({**head, **scores}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
