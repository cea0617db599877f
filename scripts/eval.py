"""make eval: the retargeting stage on held-out synthetic pairs, against ground truth.

For each held-out pair (an identity and a motion never seen in training, facts in
im_animation_core/synthetic/sampling.py), the retargeter places the identity's joints per latent frame;
the truth is the same motion rendered on the identity's body. Printed: PCK@0.05, mean joint error in
pixels and identity leakage (0 = the identity's proportions, 1 = the driver's), for the trained model and
two references: copying the driver's joints (what a pose-transfer without retargeting does) and holding
the identity's rest pose (no motion at all). Also, when present, each run under --runs (one folder per
variant and seed, each with stage-2 outputs) as mean and spread over seeds.

    python scripts/eval.py [--stage2 runs/demo/stage2] [--vae FILE] [--count 48] [--runs runs/ablations]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from im_animation_core.data import SyntheticPairs, collate_pairs  # noqa: E402
from im_animation_core.eval.metrics import identity_leakage, joint_accuracy  # noqa: E402
from im_animation_core.eval.retarget_eval import evaluate_retargeting, pool_joints  # noqa: E402
from im_animation_core.wan.vae import load_wan_vae  # noqa: E402

HELDOUT_SEED = 2026


def load_run(stage2: Path):
    from im_animation_core.tokenizer import MotionTokenizer
    from im_animation_core.train.ablation import load_modules
    from im_animation_core.train.encoders import ConvMotionEncoder, TokenizerEncoder

    outputs = json.loads((stage2 / "outputs.json").read_text())["files"]
    if "motion_tokenizer" in outputs:
        encoder = TokenizerEncoder(MotionTokenizer.from_file(stage2 / outputs["motion_tokenizer"]))
    else:
        encoder = ConvMotionEncoder.from_file(stage2 / outputs["conv_motion_encoder"])
    modules = load_modules(str(stage2 / outputs["im_animation_modules"]))
    return encoder.eval(), modules.eval()


def references(dataset, count: int) -> dict[str, dict[str, float]]:
    """Copy-the-driver and rest-pose references, scored like the model."""
    batch = collate_pairs([dataset[i] for i in range(count)])
    true, vis = pool_joints(batch["target_joints"].float(), batch["target_visible"].bool())
    drv, dvis = pool_joints(batch["driving_joints"].float(), batch["driving_visible"].bool())
    rest = batch["identity_joints"].float()[:, None].expand_as(true)
    rest_vis = batch["identity_visible"].bool()[:, None].expand_as(vis)
    size = float(max(batch["target"].shape[2:4]))
    out = {}
    for name, (xy, v) in {"copy driver joints": (drv, dvis), "identity rest pose": (rest, rest_vis)}.items():
        xy, v, t, tv, d, dv = (x.flatten(0, 1) for x in (xy, v, true, vis, drv, dvis))
        scores = joint_accuracy(xy, t, tv & v, torch.full((xy.shape[0],), size))
        scores.update(identity_leakage(xy, v & tv, t, tv, d, dv))
        out[name] = scores
    return out


def row(name: str, m: dict) -> str:
    return (f"| {name} | {m['pck']:.3f} | {m['mean_error_px']:.2f} | {m['leakage']:.3f} | {m['d_identity']:.3f} | "
            f"{m['d_driver']:.3f} |")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--stage2", default=str(REPO / "runs/demo/stage2"))
    ap.add_argument("--vae", default=str(REPO / "runs/demo/vae/ima_demo_wan21_vae.safetensors"))
    ap.add_argument("--count", type=int, default=48)
    ap.add_argument("--frames", type=int, default=9)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--runs", default=str(REPO / "runs/ablations"))
    args = ap.parse_args()
    torch.manual_seed(0)
    data = SyntheticPairs("heldout", args.count, args.frames, args.size, HELDOUT_SEED)
    vae = load_wan_vae(args.vae).eval()
    print(f"held-out pairs: {args.count}, {args.frames} frames of {args.size}x{args.size}; "
          "PCK@0.05 of the frame side; leakage 0 = identity's proportions, 1 = driver's\n")
    print("| model | PCK@0.05 | mean error (px) | leakage | d_identity | d_driver |\n|---|---|---|---|---|---|")
    for name, m in references(data, args.count).items():
        print(row(name, m))
    stage2 = Path(args.stage2)
    if (stage2 / "outputs.json").exists():
        encoder, modules = load_run(stage2)
        print(row(f"IM-Animation retargeting ({stage2.name})", evaluate_retargeting(encoder, modules, vae, data,
                                                                                   args.count)))
    else:
        print(f"| IM-Animation retargeting | not trained: no {stage2}/outputs.json | | | | |")
    runs = Path(args.runs)
    variants = sorted(p for p in runs.iterdir() if p.is_dir()) if runs.is_dir() else []
    for variant in variants:
        per_seed = [evaluate_retargeting(*load_run(s), vae, data, args.count)
                    for s in sorted(variant.iterdir()) if (s / "outputs.json").exists()]
        if not per_seed:
            continue
        agg = {k: statistics.mean(m[k] for m in per_seed) for k in per_seed[0]}
        spread = {k: (statistics.stdev(m[k] for m in per_seed) if len(per_seed) > 1 else 0.0) for k in per_seed[0]}
        print(f"| {variant.name} ({len(per_seed)} seeds) | {agg['pck']:.3f} ± {spread['pck']:.3f} | "
              f"{agg['mean_error_px']:.2f} ± {spread['mean_error_px']:.2f} | {agg['leakage']:.3f} ± "
              f"{spread['leakage']:.3f} | {agg['d_identity']:.3f} | {agg['d_driver']:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
