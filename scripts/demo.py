"""make demo: run workflows/im_animation_demo.json headless through the real ComfyUI server.

Uses the trained demo model set in models/ when it exists; until then it generates the random-weight
fixture models under the demo's file names, and says plainly that the result is noise."""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from support.fixture_models import DEMO_NAMES, write_fixture_models  # noqa: E402
from support.media import write_demo_inputs  # noqa: E402
from support.server import ComfyServer, assert_ok  # noqa: E402
from support.workflow import ui_to_api  # noqa: E402

TRAINED = {"dit": "diffusion_models", "vae": "vae", "tokenizer": "im_animation", "modules": "im_animation"}


def install_models(models: Path) -> bool:
    """Link the trained demo models into the server's models folder. False when they do not exist yet."""
    sources = {k: REPO / "models" / sub / DEMO_NAMES[k] for k, sub in TRAINED.items()}
    if not all(p.is_file() for p in sources.values()):
        return False
    for key, src in sources.items():
        dst = models / TRAINED[key] / DEMO_NAMES[key]
        dst.parent.mkdir(parents=True, exist_ok=True)
        if not dst.exists():
            dst.symlink_to(src)
    return True


def main() -> int:
    base = REPO / ".demo"
    shutil.rmtree(base, ignore_errors=True)
    server = ComfyServer(base=base)
    trained = install_models(server.models)
    if not trained:
        print("NOTE: no trained demo models in models/ yet: generating RANDOM-WEIGHT fixture models.\n"
              "      The pipeline runs end to end, but the output video is NOISE, not an animation.")
        write_fixture_models(server.models, names=DEMO_NAMES)
    write_demo_inputs(server.base / "input")
    start = time.time()
    with server:
        info = server.get("/object_info")
        prompt = ui_to_api(json.loads((REPO / "workflows" / "im_animation_demo.json").read_text()), info)
        entry = server.run(prompt)
        assert_ok(entry)
    videos = sorted((server.base / "output").rglob("*.mp4"))
    out = REPO / "out" / "demo"
    out.mkdir(parents=True, exist_ok=True)
    for v in videos:
        shutil.copy2(v, out / v.name)
    print(f"demo finished in {time.time() - start:.0f} s; output video: {out / videos[-1].name}")
    if not trained:
        print("(random weights: the video is noise)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
