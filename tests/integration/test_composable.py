"""Apply IM-Animation + IM-Animation Conditioning compose with the host's own samplers, in the real server: on
one window, the stock KSampler and SamplerCustomAdvanced give the latents of the one-node sampler, bit for bit,
on the committed demo models."""

import json

import pytest
import torch
from safetensors.torch import load_file

from tools.comfy_path import REPO
from tools.server import assert_ok
from tools.workflow import one_node_sampler, ui_to_api


@pytest.fixture(scope="module")
def server(demo_models_server):
    server = demo_models_server("composable")
    with server:
        yield server


def demo_graph(server) -> tuple[dict, str]:
    """The demo workflow up to its sampling, made one-node (API format), and the sampler's node id; decoding is
    dropped. (The committed workflow is the composable form; composable() below rebuilds it from the sampler's
    settings, so both paths run the same settings.)"""
    prompt = ui_to_api(json.loads((REPO / "workflows/im_animation_demo.json").read_text()), server.get("/object_info"))
    prompt, sampler = one_node_sampler(prompt)
    for k in [k for k, v in prompt.items() if v["class_type"] in ("VAEDecode", "CreateVideo", "SaveVideo")]:
        del prompt[k]
    return prompt, sampler


def composable(prompt: dict, sampler: str, how: str) -> dict:
    """Replace the one-node sampler by Apply IM-Animation + IM-Animation Conditioning + a host sampler."""
    s = prompt.pop(sampler)["inputs"]
    modules = prompt[s["retargeted_motion"][0]]["inputs"]["im_animation_modules"]
    prompt["apply"] = {"class_type": "IMA_ApplyModel", "inputs": {"model": s["model"], "modules": modules}}
    cond = {"retargeted_motion": s["retargeted_motion"]}
    if "expression" in s:
        cond["expression"] = s["expression"]
    prompt["cond"] = {"class_type": "IMA_Conditioning", "inputs": cond}
    if how == "ksampler":
        prompt["sample"] = {"class_type": "KSampler", "inputs": {
            "model": ["apply", 0], "seed": s["seed"], "steps": s["steps"], "cfg": s["cfg"],
            "sampler_name": s["sampler_name"], "scheduler": s["scheduler"], "positive": ["cond", 0],
            "negative": ["cond", 1], "latent_image": ["cond", 2], "denoise": 1.0}}
    else:
        prompt.update({
            "noise": {"class_type": "RandomNoise", "inputs": {"noise_seed": s["seed"]}},
            "guider": {"class_type": "CFGGuider", "inputs": {"model": ["apply", 0], "positive": ["cond", 0],
                                                             "negative": ["cond", 1], "cfg": s["cfg"]}},
            "select": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": s["sampler_name"]}},
            "sigmas": {"class_type": "BasicScheduler", "inputs": {"model": ["apply", 0], "scheduler": s["scheduler"],
                                                                  "steps": s["steps"], "denoise": 1.0}},
            "sample": {"class_type": "SamplerCustomAdvanced", "inputs": {
                "noise": ["noise", 0], "guider": ["guider", 0], "sampler": ["select", 0], "sigmas": ["sigmas", 0],
                "latent_image": ["cond", 2]}},
        })
    prompt["trim"] = {"class_type": "TrimVideoLatent", "inputs": {"samples": ["sample", 0], "trim_amount": ["cond", 3]}}
    return prompt


def latent_of(server, prompt: dict, output: list, prefix: str) -> torch.Tensor:
    prompt = {**prompt, "save": {"class_type": "SaveLatent", "inputs": {"samples": output,
                                                                        "filename_prefix": prefix}}}
    assert_ok(server.run(prompt))
    files = sorted((server.base / "output").rglob(f"{prefix}*.latent"))
    assert len(files) == 1, files
    return load_file(str(files[0]))["latent_tensor"]


@pytest.fixture(scope="module")
def sampler_latent(server):
    prompt, sampler = demo_graph(server)
    return latent_of(server, prompt, [sampler, 0], "one_node")


@pytest.mark.parametrize("how", ["ksampler", "custom_advanced"])
def test_host_samplers_give_the_one_node_samplers_latents(server, sampler_latent, how):
    prompt, sampler = demo_graph(server)
    out = latent_of(server, composable(prompt, sampler, how), ["trim", 0], how)
    assert out.shape == sampler_latent.shape  # [1,16,5,16,16]: 17 frames of 128x128, the identity frame trimmed
    assert torch.isfinite(out).all() and out.abs().max() > 0.1
    assert torch.equal(out, sampler_latent)
