"""Copy the trained demo model set from runs/ into models/ under the names the demo workflow loads.

    python -m lab.package_demo [--stage3 RUN (default: the last DiT phase of make train-demo's chain)]
                                   [--vae FILE (default: the dim-16 VAE run)]

Prints each file's size and SHA-256 (recorded in docs/training.md) and fails when models/ as a whole (every file
under it, the copied set and everything else committed there) is over 60 MB.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from im_animation_core.train.cache import file_sha256
from im_animation_core.train.outputs import run_file
from lab.train_demo import LATEST_STAGE3
from tools.demo_set import SOURCES

REPO = Path(__file__).resolve().parents[1]
MODELS = REPO / "models"
LIMIT_MB = 60  # on models/ as a whole


def models_size(folder: Path) -> int:
    """Bytes of every file under folder, recursively (the limit is on what models/ commits in all)."""
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser()
    ap.add_argument("--stage3", default=f"runs/demo128/{LATEST_STAGE3}")
    ap.add_argument("--vae", default="runs/demo128/vae16/ima_demo128_wan21_vae.safetensors")
    return ap


def main() -> int:
    args = parser().parse_args()
    stage3 = REPO / args.stage3
    plan = {"dit": run_file(stage3, "dit"), "vae": REPO / args.vae, "tokenizer": run_file(stage3, "motion_tokenizer"),
            "modules": run_file(stage3, "modules")}
    copied = 0
    for key, src in plan.items():
        dst = SOURCES[key]
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
        size = dst.stat().st_size
        copied += size
        print(f"{dst.relative_to(REPO)}  {size / 1e6:.2f} MB  sha256 {file_sha256(str(dst))}  (from {src})")
    total = models_size(MODELS)
    print(f"demo set {copied / 1e6:.2f} MB; models/ in all {total / 1e6:.2f} MB")
    if total > LIMIT_MB * 1e6:
        print(f"models/ is over {LIMIT_MB} MB", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
