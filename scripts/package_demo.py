"""Copy the trained demo model set from runs/ into models/ under the names the demo workflow loads.

    python scripts/package_demo.py [--stage3 runs/demo/stage3] [--vae FILE (default: the 17-frame decoder run)]

Prints each file's size and SHA-256 (recorded in docs/training.md) and fails when the set is over 60 MB.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LIMIT_MB = 60


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--stage3", default="runs/demo/stage3")
    ap.add_argument("--vae", default="runs/demo/vae_decoder17/ima_demo_wan21_vae.safetensors")
    args = ap.parse_args()
    stage3 = REPO / args.stage3
    files = json.loads((stage3 / "outputs.json").read_text())["files"]
    plan = {
        REPO / "models/diffusion_models/ima_demo_wan.safetensors": stage3 / files["dit"],
        REPO / "models/vae/ima_demo_wan21_vae.safetensors": REPO / args.vae,
        REPO / "models/im_animation/ima_demo_motion_tokenizer.safetensors": stage3 / files["motion_tokenizer"],
        REPO / "models/im_animation/ima_demo_modules.safetensors": stage3 / files["modules"],
    }
    total = 0
    for dst, src in plan.items():
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
        size = dst.stat().st_size
        total += size
        print(f"{dst.relative_to(REPO)}  {size / 1e6:.2f} MB  sha256 {sha256(dst)}  (from {src})")
    print(f"total {total / 1e6:.2f} MB")
    if total > LIMIT_MB * 1e6:
        print(f"the demo set is over {LIMIT_MB} MB", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
