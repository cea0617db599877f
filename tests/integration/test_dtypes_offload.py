"""The nodes with the diffusion model in bf16 and fp16, and with every model unloaded between runs, in the real
ComfyUI server on the CPU.

On the CPU ComfyUI keeps bf16/fp16 weights (``--bf16-unet`` / ``--fp16-unet``: the weight dtype the stock
UNETLoader then loads) but computes in fp32; the stock Model Compute Dtype node makes the DiT compute in the
weight dtype too, as it does on a GPU, so the pack's expression blocks and motion channels see bf16/fp16
activations. The host refuses ``--lowvram`` / ``--novram`` together with ``--cpu`` (one argument group), and
on the CPU its model management never offloads; so the offload is forced the way the UI's "Unload models" does
it (POST /free: every model unloaded, the caches dropped) between two runs, and the second run must load the
pack's modules again through comfy.model_management and give the first run's latents bit for bit. What
low-VRAM loading would do to the pack's modules is checked in-process below."""

import importlib
import re

import pytest
import torch
from safetensors.torch import load_file

from lab.bench.gpu_comfy import unload_everything
from tools.server import assert_ok

LOADED = re.compile(r"Requested to load (\w+)")
DEMO_API = "workflows/api/im_animation_demo.json"


def prompt_in(compute_dtype: str, tokenizer_dtype: str, prefix: str) -> dict:
    """The demo workflow up to the trimmed latent (saved as ``prefix``), the DiT through Model Compute Dtype."""
    import json

    from tools.comfy_path import REPO

    prompt = json.loads((REPO / DEMO_API).read_text())
    for k in [k for k, v in prompt.items() if v["class_type"] in ("VAEDecode", "CreateVideo", "SaveVideo")]:
        del prompt[k]
    unet = next(k for k, v in prompt.items() if v["class_type"] == "UNETLoader")
    for node in prompt.values():
        for name, value in node["inputs"].items():
            if value == [unet, 0]:
                node["inputs"][name] = ["compute_dtype", 0]
        if node["class_type"] == "IMA_LoadMotionTokenizer":
            node["inputs"]["dtype"] = tokenizer_dtype
    prompt["compute_dtype"] = {"class_type": "ModelComputeDtype", "inputs": {"model": [unet, 0],
                                                                            "dtype": compute_dtype}}
    trim = next(k for k, v in prompt.items() if v["class_type"] == "TrimVideoLatent")
    prompt["save"] = {"class_type": "SaveLatent", "inputs": {"samples": [trim, 0], "filename_prefix": prefix}}
    return prompt


def run_and_load(server, prompt: dict, prefix: str) -> tuple[torch.Tensor, list[str]]:
    before = len(LOADED.findall(server.log()))
    assert_ok(server.run(prompt))
    files = sorted((server.base / "output").rglob(f"{prefix}*.latent"))
    assert len(files) == 1, files
    return load_file(str(files[0]))["latent_tensor"], LOADED.findall(server.log())[before:]


@pytest.mark.default_host_only  # four CPU runs of the demo; the dtype paths are the host's, checked on v0.33
@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
def test_half_precision_dit_and_tokenizer_and_unload_between_runs(demo_models_server, dtype):
    server = demo_models_server(f"dtype_{dtype}")
    server.extra_args = [f"--{dtype}-unet"]
    with server:
        first, loaded_first = run_and_load(server, prompt_in(dtype, dtype, "first"), "first")
        unload_everything(server)
        second, loaded_second = run_and_load(server, prompt_in(dtype, dtype, "second"), "second")
        log = server.log()
    torch_dtype = {"bf16": "torch.bfloat16", "fp16": "torch.float16"}[dtype]
    assert f"model weight dtype {torch_dtype}" in log  # the stock loader kept the weights in half precision
    assert first.shape == (1, 16, 5, 16, 16) and torch.isfinite(first).all() and first.abs().max() > 0.1
    for loaded in (loaded_first, loaded_second):  # the second run loads everything again, after the unload
        assert {"IMAnimationModules", "MotionTokenizer", "WAN21"} <= set(loaded), loaded
    assert torch.equal(first, second)


@pytest.fixture(scope="module")
def pack():
    from tools.inprocess import PACKAGE, load_pack

    load_pack()
    return lambda name: importlib.import_module(f"{PACKAGE}.{name}")


def test_pack_modules_load_whole_under_a_low_vram_budget(pack):
    """ComfyUI's low-VRAM loading (what --lowvram / --novram give on a GPU: a weight budget of 0.1 bytes under
    --novram) moves only comfy.ops layers that fit; the pack's plain torch modules must load whole regardless,
    and unload whole, or part of their weights would stay on the offload device while they run."""
    import comfy.model_patcher

    from tools.fixture_models import tiny_modules

    devices = pack("nodes.devices")
    module = tiny_modules(seed=0).eval()
    plain = comfy.model_patcher.ModelPatcher(module, load_device=torch.device("cpu"),
                                             offload_device=torch.device("cpu"))
    plain.load(torch.device("cpu"), lowvram_model_memory=0.1)
    assert plain.loaded_size() < plain.model_size()  # the stock patcher loads none of it under this budget
    plain.detach()

    whole = devices.patcher_for(tiny_modules(seed=0).eval())
    whole.load(torch.device("cpu"), lowvram_model_memory=0.1)
    assert whole.loaded_size() == whole.model_size() and not whole.model.model_lowvram
    assert whole.partially_unload(torch.device("cpu"), memory_to_free=1) == 0  # all or nothing
    assert whole.clone().__class__ is type(whole)


def test_the_patched_dit_does_not_own_the_modules_weights(pack):
    """The motion channels' convolution rides in the patched DiT's patch embedding, but belongs to the modules'
    patcher: while the patched model is patched, its own load list (what its patcher moves and offloads) holds
    none of the modules' parameters."""
    import comfy.sd

    from tools.fixture_models import tiny_modules, tiny_wan_dit_state_dict

    devices, wan_patch = pack("nodes.devices"), pack("nodes.wan_patch")
    model = comfy.sd.load_diffusion_model_state_dict(tiny_wan_dit_state_dict(seed=0))
    modules = devices.patcher_for(tiny_modules(seed=0).eval())
    patched = wan_patch.apply_im_animation("test", model, modules)
    patched.patch_model(load_weights=False)
    try:
        embed = patched.model.diffusion_model.patch_embedding
        assert embed.motion_conv is modules.model.motion_patch  # in use, not copied
        owned = {id(p) for entry in patched._load_list() for p in entry[-2].parameters(recurse=False)}
        assert not owned & {id(p) for p in modules.model.parameters()}
        assert {id(p) for p in embed.base.parameters()} <= owned  # the DiT's own embedding stays the DiT's
    finally:
        patched.unpatch_model()
