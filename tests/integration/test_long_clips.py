"""A clip of three sampler windows on the committed demo models: its first window is what a one-window run
makes, and its last window stays about as close to the ground truth as its first (docs/long_clips.md)."""

import json

import pytest
import torch
from safetensors.torch import load_file

from im_animation_core.eval.metrics import psnr
from im_animation_core.video import read_video
from tools import demo_support as ds
from tools.comfy_path import REPO
from tools.demo import run_prompt
from tools.workflow import one_node_sampler, ui_to_api

FRAMES, WINDOW, OVERLAP = 49, 17, 4  # windows over latent frames 0-4, 4-8, 8-12
# The demo DiT was trained on 17-frame clips and never to continue one, so a window after the first loses some
# fidelity (a limit of the model, documented). Measured on this pair, first / last window: 17.38 / 13.77 dB with
# the stage3_joint5 set, 18.13 / 13.90 dB with stage3_joint6 (the last window a little better, the first more so,
# hence a drop of 4.2 dB); retargeting the whole clip at once (the former behaviour) put the last window 6.2 dB
# below the first with an earlier set. So the drop is bounded, and the last window may not fall below what the
# committed sets have made of it, less 0.5 dB.
MAX_DROP_DB = 5.0
MIN_LAST_DB = 13.3


@pytest.fixture(scope="module")
def runs(demo_models_server):
    """The demo workflow on a 49-frame held-out pair in 17-frame windows, and on its first 17 frames (length 17,
    the same input files); the result frames and, through a SaveLatent node, the sampled latents of each."""
    item = ds.demo_pairs("heldout", ds.DEMO_INDEX + 1, ds.DEMO_SEED, frames=FRAMES)[ds.DEMO_INDEX]
    server = demo_models_server("long_clips", item)
    out = {}
    with server:
        base = ui_to_api(json.loads((REPO / "workflows/im_animation_demo.json").read_text()),
                         server.get("/object_info"))
        for name, length in (("short", 17), ("long", 0)):
            prompt, sampler = one_node_sampler(base)
            prompt[sampler]["inputs"].update(window_frames=WINDOW, overlap_frames=OVERLAP)
            next(v for v in prompt.values() if v["class_type"] == "IMA_RetargetToIdentity")["inputs"]["length"] = length
            prompt["900"] = {"class_type": "SaveLatent", "inputs": {"samples": [sampler, 0],
                                                                    "filename_prefix": f"latents/{name}"}}
            out[name] = read_video(run_prompt(server, prompt)).frames
            (latent,) = (server.base / "output" / "latents").glob(f"{name}_*.latent")
            out[name + "_latent"] = load_file(str(latent))["latent_tensor"]
        out["log"] = server.log()
    return item["target"].float(), out


def test_the_first_window_of_a_long_clip_is_the_one_window_run(runs):
    _, out = runs
    assert out["long"].shape[0] == FRAMES and out["short"].shape[0] == 17
    short, long = out["short_latent"], out["long_latent"]
    assert long.shape[2] == 13 and short.shape[2] == 5
    # Same driving frames, seed and noise: only the retargeting of frames past 17 could change the first window,
    # and it must not (retargeting the whole clip at once did).
    torch.testing.assert_close(long[:, :, :5], short, rtol=0, atol=1e-5)


def test_the_last_window_stays_about_as_close_to_the_truth_as_the_first(runs):
    target, out = runs
    first = psnr(out["long"][:16], target[:16])
    last = psnr(out["long"][-16:], target[-16:])
    print(f"PSNR first window {first:.2f} dB, last window {last:.2f} dB")
    assert last > first - MAX_DROP_DB, (first, last)
    assert last > MIN_LAST_DB, (first, last)
    assert "made in 3 windows" in out["log"]  # the limit is said in the log
