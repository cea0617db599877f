"""make demo: run workflows/im_animation_demo.json headless through the real ComfyUI server, as the frontend
exports it (workflows/api/im_animation_demo.json).

The inputs are a held-out pair of the synthetic generator (demo_support.DEMO_SEED / DEMO_INDEX): a driving
clip (a motion on identity A) and an identity image (identity B), whose exact ground truth (the same motion
on identity B) is known. Writes to out/demo/: the output video, strip.gif / strip.mp4 (driving | identity |
result | ground truth, side by side), strip.png (a contact sheet of 5 frames) and metrics.json (PSNR / SSIM
against the ground truth; joint metrics of the trained retargeter), and prints the metrics.

Uses the trained demo model set in models/ when it exists; until then it generates the random-weight
fixture models under the demo's file names, and says plainly that the result is noise."""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

from im_animation_core.eval.video_rows import image_metrics
from im_animation_core.video import read_video
from tools import demo_support as ds
from tools.demo_set import DEMO_NAMES, SOURCES, TRAINED
from tools.fixture_models import write_fixture_models
from tools.media import DRIVING_NAME, IDENTITY_NAME
from tools.server import ComfyServer, assert_ok

REPO = Path(__file__).resolve().parents[1]

RANDOM_NOTE = ("NOTE: no trained demo models in models/ yet: generating RANDOM-WEIGHT fixture models.\n"
               "      The pipeline runs end to end, but the output video is NOISE, not an animation,\n"
               "      and the metrics below measure random weights.")


def install_models(models: Path) -> bool:
    """Link the trained demo models into the server's models folder. False when they do not exist yet."""
    if not all(p.is_file() for p in SOURCES.values()):
        return False
    for key, src in SOURCES.items():
        dst = models / TRAINED[key] / DEMO_NAMES[key]
        dst.parent.mkdir(parents=True, exist_ok=True)
        if not dst.exists():
            dst.symlink_to(src)
    return True


API_WORKFLOW = REPO / "workflows" / "api" / "im_animation_demo.json"


def demo_prompt(server: ComfyServer | None = None) -> dict:
    """The demo workflow as the real ComfyUI frontend exports it in the API format ("Export (API)"): the browser
    tests write workflows/api/ through the frontend's own graphToPrompt and fail when it is stale. The same export
    runs on v0.8 (tests/integration: test_demo_workflow_runs_end_to_end runs it on both hosts)."""
    return json.loads(API_WORKFLOW.read_text())


def run_prompt(server: ComfyServer, prompt: dict) -> Path:
    """Run a prompt on a started server; the path of the video its SaveVideo node wrote (from the history)."""
    entry = server.run(prompt)
    assert_ok(entry)
    saved = [server.base / item.get("type", "output") / item.get("subfolder", "") / item["filename"]
             for out in entry.get("outputs", {}).values() for item in out.get("images", [])
             if str(item.get("filename", "")).endswith((".mp4", ".webm", ".mov"))]
    if not saved:
        raise RuntimeError(f"the workflow saved no video; its outputs: {json.dumps(entry.get('outputs'))[:2000]}")
    return saved[-1]


def run_workflow(server: ComfyServer) -> Path:
    """Start the server, run the demo workflow once and stop it; the path of the video it saved."""
    with server:
        return run_prompt(server, demo_prompt(server))


def main() -> int:
    base = REPO / ".demo"
    shutil.rmtree(base, ignore_errors=True)
    server = ComfyServer(base=base)
    trained = install_models(server.models)
    if not trained:
        print(RANDOM_NOTE)
        write_fixture_models(server.models, names=DEMO_NAMES)
    item = ds.demo_pair()
    ds.write_pair_inputs(server.base / "input", item, IDENTITY_NAME, DRIVING_NAME)
    start = time.time()
    video = run_workflow(server)
    seconds = time.time() - start

    out = REPO / "out" / "demo"
    out.mkdir(parents=True, exist_ok=True)
    shutil.copy2(video, out / video.name)
    result = read_video(video).frames
    strip = ds.write_strip(out, item, result, random_weights=not trained)

    metrics = {"clip": {"split": "heldout", "seed": ds.DEMO_SEED, "index": ds.DEMO_INDEX, "frames": ds.DEMO_FRAMES,
                        "size": ds.DEMO_SIZE, "thickness_scale": ds.DEMO_THICKNESS_SCALE,
                        "min_contrast": ds.DEMO_MIN_CONTRAST, "motion": item["motion_kind"]},
               "weights": "trained (models/)" if trained else "RANDOM fixture weights: the numbers mean nothing",
               "video": video.name, "joints": None}
    if trained:
        models = ds.load_trained(SOURCES["tokenizer"], SOURCES["modules"], SOURCES["vae"])
        metrics["joints"] = ds.joint_metrics(item, *models)
    else:
        metrics["joints_note"] = "not computed: they need the trained tokenizer, modules and VAE in models/"
    metrics["image"] = image_metrics(item, result, vae=models[2] if trained else None)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")

    print(f"\ndemo workflow finished in {seconds:.0f} s\n")
    print(ds.markdown_tables(metrics))
    print(f"\nwrote {out / video.name}, {', '.join(str(p) for p in strip.values())}, {out / 'metrics.json'}")
    if not trained:
        print("(random weights: the result is noise and its metrics measure nothing)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
