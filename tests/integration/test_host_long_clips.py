"""Long clips the host's way, on the committed demo models and a 49-frame held-out pair, in the real server:
- the committed workflow workflows/im_animation_demo_long.json (the stock KSampler under WAN Context Windows, 17
  frames, overlap 4) gives each window within 1 dB (PSNR against the ground truth) of the one-node windowed
  sampler, and no window drifts past docs/long_clips.md's limits;
- three chunks chained with IM-Animation Conditioning's previous_chunk / video_frame_offset and stock KSamplers,
  joined with Latent Concat, give the one-node sampler's latents bit for bit (same windows, seeds seed, seed+1,
  seed+2), and the seams' PSNR steps are like their neighbours'."""

import json

import pytest
import torch
from safetensors.torch import load_file

from im_animation_core.eval.metrics import psnr
from im_animation_core.video import read_video
from tools import demo_support as ds
from tools.comfy_path import REPO
from tools.demo import run_prompt
from tools.media import LONG_DRIVING_NAME, LONG_FRAMES, write_video
from tools.workflow import one_node_sampler, ui_to_api

FRAMES, WINDOW, OVERLAP = LONG_FRAMES, 17, 4  # windows over latent frames 0-4, 4-8, 8-12
WINDOWS = [(0, 17), (17, 33), (33, 49)]  # the frames each window adds
MAX_DROP_DB, MIN_LAST_DB = 5.0, 13.3  # docs/long_clips.md, tests/integration/test_long_clips.py
SEAMS = (17, 33)
pytestmark = pytest.mark.default_host_only  # three 49-frame CPU runs, and v0.33's context-window node inputs


def base_prompt(server) -> dict:
    return ui_to_api(json.loads((REPO / "workflows/im_animation_demo.json").read_text()), server.get("/object_info"))


def ids(prompt: dict) -> dict:
    return {v["class_type"]: k for k, v in prompt.items()}


def long_workflow(server) -> dict:
    """workflows/im_animation_demo_long.json in API form: the demo graph (Apply IM-Animation -> ModelSamplingSD3 ->
    KSampler) with WAN Context Windows before the KSampler, driven by the 49-frame clip."""
    prompt = ui_to_api(json.loads((REPO / "workflows/im_animation_demo_long.json").read_text()),
                       server.get("/object_info"))
    k = ids(prompt)
    cw = prompt[k["WanContextWindowsManual"]]["inputs"]
    assert (cw["context_length"], cw["context_overlap"], cw["context_schedule"]) == (WINDOW, OVERLAP,
                                                                                      "standard_static"), cw
    assert prompt[k["KSampler"]]["inputs"]["model"] == [k["WanContextWindowsManual"], 0]
    assert prompt[k["LoadVideo"]]["inputs"]["file"] == LONG_DRIVING_NAME
    return prompt


def chunked(prompt: dict) -> dict:
    """The demo graph made three chunks of 17, 16 and 16 frames: each IM-Animation Conditioning continues the
    previous KSampler's latent at the previous conditioning's video_frame_offset; each chunk's new latent frames
    (Trim Video Latent by trim_latent) are joined with Latent Concat and decoded once."""
    prompt = json.loads(json.dumps(prompt))
    k = ids(prompt)
    cond, ks = prompt[k["IMA_Conditioning"]], prompt[k["KSampler"]]
    cond["inputs"].update(video_frame_offset=0, length=17)
    joined = [k["TrimVideoLatent"], 0]
    prompt["save0"] = {"class_type": "SaveLatent", "inputs": {"samples": joined, "filename_prefix": "latents/chunk0"}}
    for i, length in ((1, 16), (2, 16)):
        prev_cond, prev_ks = (k["IMA_Conditioning"], k["KSampler"]) if i == 1 else (f"cond{i - 1}", f"ks{i - 1}")
        prompt[f"cond{i}"] = {"class_type": "IMA_Conditioning", "inputs": {
            **{n: cond["inputs"][n] for n in ("retargeted_motion", "expression") if n in cond["inputs"]},
            "previous_chunk": [prev_ks, 0], "video_frame_offset": [prev_cond, 4], "length": length}}
        prompt[f"ks{i}"] = {"class_type": "KSampler", "inputs": {
            **ks["inputs"], "seed": ks["inputs"]["seed"] + i, "positive": [f"cond{i}", 0],
            "negative": [f"cond{i}", 1], "latent_image": [f"cond{i}", 2]}}
        prompt[f"trim{i}"] = {"class_type": "TrimVideoLatent", "inputs": {"samples": [f"ks{i}", 0],
                                                                          "trim_amount": [f"cond{i}", 3]}}
        prompt[f"save{i}"] = {"class_type": "SaveLatent", "inputs": {"samples": [f"trim{i}", 0],
                                                                     "filename_prefix": f"latents/chunk{i}"}}
        prompt[f"join{i}"] = {"class_type": "LatentConcat", "inputs": {"samples1": joined,
                                                                       "samples2": [f"trim{i}", 0], "dim": "t"}}
        joined = [f"join{i}", 0]
    prompt[k["VAEDecode"]]["inputs"]["samples"] = joined
    return prompt


def latent(server, prefix: str) -> torch.Tensor:
    (path,) = (server.base / "output" / "latents").glob(f"{prefix}_*.latent")
    return load_file(str(path))["latent_tensor"]


@pytest.fixture(scope="module")
def runs(demo_models_server):
    item = ds.long_demo_pair(FRAMES)
    server = demo_models_server("host_long_clips", item)
    write_video(server.base / "input" / LONG_DRIVING_NAME, item["driving"], fps=24.0)
    out = {}
    with server:
        base = base_prompt(server)
        one, sampler = one_node_sampler(base)
        one[sampler]["inputs"].update(window_frames=WINDOW, overlap_frames=OVERLAP)
        one["900"] = {"class_type": "SaveLatent", "inputs": {"samples": [sampler, 0],
                                                            "filename_prefix": "latents/one_node"}}
        out["one_node"] = read_video(run_prompt(server, one)).frames
        out["one_node_latent"] = latent(server, "one_node")
        out["context_windows"] = read_video(run_prompt(server, long_workflow(server))).frames
        out["chunks"] = read_video(run_prompt(server, chunked(base))).frames
        out["chunk_latents"] = [latent(server, f"chunk{i}") for i in range(3)]
        out["log"] = server.log()
    return item["target"].float(), out


def window_psnr(frames, target) -> list[float]:
    return [psnr(frames[a:b], target[a:b]) for a, b in WINDOWS]


def test_context_windows_match_the_one_node_sampler_window_by_window(runs):
    target, out = runs
    assert out["context_windows"].shape[0] == FRAMES
    one, cw = window_psnr(out["one_node"], target), window_psnr(out["context_windows"], target)
    print("PSNR per window, one-node", [f"{v:.2f}" for v in one], "context windows", [f"{v:.2f}" for v in cw])
    assert all(c > o - 1.0 for c, o in zip(cw, one, strict=True)), (one, cw)
    assert cw[-1] > cw[0] - MAX_DROP_DB and cw[-1] > MIN_LAST_DB, cw
    assert "each starting from the identity" in out["log"]  # the pack's windows, not the host's plain ones


def test_chained_chunks_are_the_one_node_samplers_windows_bit_for_bit(runs):
    _, out = runs
    c0, c1, c2 = out["chunk_latents"]
    assert [c.shape[2] for c in (c0, c1, c2)] == [5, 4, 4]  # trim_latent drops the carried-over frame too
    assert torch.equal(torch.cat([c0, c1, c2], dim=2), out["one_node_latent"])


def test_chunk_seams_do_not_jump(runs):
    target, out = runs
    frames = out["chunks"]
    assert frames.shape[0] == FRAMES
    per_frame = [psnr(frames[i], target[i]) for i in range(FRAMES)]
    print("chunks: PSNR per window", [f"{v:.2f}" for v in window_psnr(frames, target)])
    for s in SEAMS:
        seam = abs(per_frame[s] - per_frame[s - 1])
        near = [abs(per_frame[i] - per_frame[i - 1]) for i in (s - 2, s - 1, s + 1, s + 2)]
        print(f"seam {s}: step {seam:.2f} dB, neighbouring steps", [f"{v:.2f}" for v in near])
        assert seam <= max(near) + 1.5, (s, seam, near)
    torch.testing.assert_close(frames, out["one_node"], rtol=0, atol=2 / 255)  # one decode of the same latents
