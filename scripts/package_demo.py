"""Copy the trained demo model set from runs/ into models/ under the names the demo workflow loads.

    python scripts/package_demo.py [--stage3 runs/demo/stage3_clean] [--vae FILE (default: the 17-frame decoder run)]

Prints each file's size and SHA-256 (recorded in docs/training.md) and fails when the set is over 60 MB.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LIMIT_MB = 60

from demo import SOURCES  # noqa: E402  (where make demo looks for the set; scripts/ is on the path)

from im_animation_core.train.outputs import run_file  # noqa: E402  (demo put the repository on the path)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--stage3", default="runs/demo/stage3_clean")
    ap.add_argument("--vae", default="runs/demo/vae_decoder17/ima_demo_wan21_vae.safetensors")
    args = ap.parse_args()
    stage3 = REPO / args.stage3
    plan = {"dit": run_file(stage3, "dit"), "vae": REPO / args.vae, "tokenizer": run_file(stage3, "motion_tokenizer"),
            "modules": run_file(stage3, "modules")}
    total = 0
    for key, src in plan.items():
        dst = SOURCES[key]
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
