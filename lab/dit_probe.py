"""Does a Stage-3 run's DiT draw the driver's motion? (im_animation_core/eval/dit_probe.py)

    python -m lab.dit_probe RUN [--count 8] [--family wave] [--vae models/vae/ima_demo_wan21_vae.safetensors]

RUN: a Stage-3 output folder (its config.json, wan_dit.safetensors and im_animation_modules.safetensors) or
one of its checkpoints (config.json + model.safetensors), e.g. runs/demo/stage3 or
runs/demo/stage3/checkpoints/step_00008000. Held-out pairs 0..count-1 of the video evaluation's seed (make
eval's video rows) at the run's own frame size and drawing options (its data.size and data.options: for a run
of the demo domain, make eval's video pairs themselves), the ground truth noised to sigma 0.3 / 0.6 / 0.9; the
VAE decodes the x0 estimates (the demo workflow's VAE by default). Prints a Markdown table: a DiT that ignores
the motion scores the same with its own and with another driver's motion. --family NAME: the first --count
held-out pairs of that motion family (walk, wave, dance, turn) instead, to tell where one family is lost.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_model

from im_animation_core.data import SyntheticPairs, collate_pairs
from im_animation_core.eval.dit_probe import probe_dit_motion
from im_animation_core.frames import video_to_clip
from im_animation_core.train.build import build_vae
from im_animation_core.train.config import config_from_dict
from im_animation_core.train.stages import DIT_FILE, MODULES_FILE, Stage3
from im_animation_core.train.trainer import WEIGHTS_FILE
from im_animation_core.wan.vae import load_wan_vae
from lab import eval_video as ev
from tools import demo
from tools import demo_support as ds

REPO = Path(__file__).resolve().parents[1]
SCAN_PAIRS = 200  # --family looks for its pairs among this many held-out pairs


def load_stage3(run: Path, scratch: str) -> Stage3:
    """The Stage-3 model of an output folder or checkpoint, in eval mode on the CPU."""
    if not (run / "config.json").is_file():
        sys.exit(f"dit_probe: '{run}' has no config.json; give a Stage-3 output folder or one of its checkpoints")
    cfg = json.loads((run / "config.json").read_text())
    cfg["output_dir"] = scratch
    checkpoint = run / WEIGHTS_FILE
    if not checkpoint.is_file():
        cfg["dit"]["path"] = str(run / DIT_FILE)
        cfg["modules"]["path"] = str(run / MODULES_FILE)
    config = config_from_dict("stage3", cfg)
    stage = Stage3(config, build_vae(config.vae, torch.device("cpu")))
    if checkpoint.is_file():
        load_model(stage.model, str(checkpoint), strict=True)
    stage.model.eval()
    return stage


def probe_pairs(size, options: dict, count: int, family: str | None) -> tuple[SyntheticPairs, list[int]]:
    """make eval's held-out video pairs (seed ev.EVAL_VIDEO_SEED) at a run's frame size and drawing options, and
    the indices probed: the first ``count``, or the first ``count`` of motion family ``family`` among SCAN_PAIRS."""
    # A run's family mix (kind_weights) is how it drew its training clips, not its domain: left out, so that
    # every run is probed on make eval's pairs.
    options = {k: v for k, v in options.items() if k != "kind_weights"}
    pool = count if family is None else SCAN_PAIRS
    data = SyntheticPairs("heldout", pool, frames=ds.DEMO_FRAMES, size=size, seed=ev.EVAL_VIDEO_SEED, **options)
    chosen = [i for i in range(pool) if family is None or data.parameters(i)[2].kind == family]
    return data, chosen[:count]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("run", type=Path)
    ap.add_argument("--count", type=int, default=8)
    ap.add_argument("--vae", type=Path, default=demo.SOURCES["vae"], help="the VAE that decodes the x0 estimates")
    ap.add_argument("--family", help="only pairs of this motion family (walk, wave, dance, turn)")
    args = ap.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as scratch:
        stage = load_stage3(args.run, scratch)
    d = stage.config.data
    data, chosen = probe_pairs(d.size, d.options, args.count, args.family)
    if len(chosen) < 2:
        sys.exit(f"dit_probe: --family {args.family}: {len(chosen)} of the first {SCAN_PAIRS} held-out pairs; need 2")
    batch = stage.prepare(collate_pairs([data[i] for i in chosen]))
    vae = load_wan_vae(args.vae).eval()
    rows = probe_dit_motion(stage.model, batch, lambda z: video_to_clip(vae.decode(z))[0])
    which = f" of the {args.family} family (pairs {chosen})" if args.family else ""
    print(f"{args.run}: {len(chosen)} held-out video pairs{which} (seed {ev.EVAL_VIDEO_SEED}); own motion vs "
          "another pair's driver retargeted onto the same identity\n")
    print("| sigma | L_DiT own / other | gap | moving pixels own / other | gap | x0 motion corr own / other |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['sigma']:.1f} | {r['loss_own']:.4f} / {r['loss_other']:.4f} | "
              f"{r['loss_other'] / r['loss_own'] - 1:+.1%} | {r['moving_own']:.4f} / {r['moving_other']:.4f} | "
              f"{r['moving_other'] / r['moving_own'] - 1:+.1%} | {r['corr_own']:+.3f} / {r['corr_other']:+.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
