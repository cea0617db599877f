"""The ComfyUI parts of the GPU check (lab/bench/gpu_check.py runs each in a child process of its own).

``comfy_demo``: the demo workflow (workflows/api/im_animation_demo.json) through the real ComfyUI server with this
pack, on the committed demo model set when models/ holds it, else on the random-weight fixture set under the same
names. On a GPU: one server per host setting (default flags, which on a ComfyUI with dynamic VRAM is that
loader; ``--lowvram`` with the legacy loader; ``--novram``) and one ``--cpu`` server for the reference; each runs
the workflow, is told to unload every model (POST /free, what ComfyUI's "Unload models" does) and runs it again.
Figures: seconds per run, peak memory (GPU: the device's memory in use, sampled by nvidia-smi, less what was in
use before the server started; CPU: the server's peak resident memory), the saved latent against the first run
of the same server (must be equal: unloading and reloading changes nothing) and, on a GPU, against the CPU's
(max |diff|, relative L2, within ``DEMO_TOLERANCE``), and the demo's image metrics (PSNR/SSIM of the decoded
video against the pair's exact ground truth). A run that fails (a tensor on the wrong device is a failed run)
fails the part, with the host's message.

``comfy_5b``: the Wan2.2 TI2V-5B pipeline at its exact shapes with random weights written to disk first (the
5B DiT in bf16, the Wan2.2 VAE, the modules at their default sizes, the motion tokenizer at the released size;
no text encoder: umt5-xxl is 11 GB in bf16 and its output does not change the DiT's cost, so the prompts are
IM-Animation Conditioning's empty-text context). ComfyUI runs in this process (its model management, on the
GPU when there is one): the stock loaders (UNETLoader with weight_dtype ``default`` and ``fp8_e4m3fn``,
VAELoader), the pack's nodes, and KSampler's own function (``nodes.common_ksampler``) on the patched model
(Apply IM-Animation + IM-Animation Conditioning) and on the native one (the stock TI2V latent, the same empty
prompts); per resolution and weight dtype the per-step seconds of each side (calls of 1 and 2 steps, the
difference; cfg 1: one model call per step), patched / native, peak memory, and the check that the pack's
modules sit on the load device while sampling and on the offload device after ComfyUI unloads everything.

``--smoke`` (the unit test): the same code on the CPU at tiny sizes (the fixture model set, 9 frames of 64x96
and 96x160) in a few minutes of two cores.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]

# CPU vs GPU numerics of the demo's saved latent (relative L2). Provisional: set from the first GPU run's
# figures (docs/benchmarks.md); the JSON records the measured value either way.
DEMO_TOLERANCE = 0.05
LOAD_LINE = re.compile(r"Requested to load (\w+)")
WRONG_DEVICE = re.compile(r"Expected all tensors to be on the same device|found at least two devices", re.I)


# ---- memory ------------------------------------------------------------------------------------------------
def gpu_memory_used_mib() -> float | None:
    """The memory in use on GPU 0 (all processes), by nvidia-smi; None without one."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits", "-i", "0"],
                             capture_output=True, text=True, timeout=10)
        return float(out.stdout.strip().splitlines()[0]) if out.returncode == 0 else None
    except (OSError, ValueError, IndexError, subprocess.TimeoutExpired):
        return None


class PeakSampler:
    """Samples the GPU's memory in use every ``every`` s in a thread; peak_mib - baseline_mib is what the runs
    added."""

    def __init__(self, every: float = 0.2):
        self.every, self.baseline_mib, self.peak_mib = every, gpu_memory_used_mib(), None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            used = gpu_memory_used_mib()
            if used is not None:
                self.peak_mib = used if self.peak_mib is None else max(self.peak_mib, used)
            self._stop.wait(self.every)

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def peak_rss_bytes(pid: int) -> int | None:
    """A process's peak resident memory (VmHWM), Linux only."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    m = re.search(r"^VmHWM:\s+(\d+) kB", text, re.M)
    return int(m.group(1)) * 1024 if m else None


# ---- comfy_demo ---------------------------------------------------------------------------------------------
def demo_variants(smoke: bool, comfyui: Path) -> list[tuple[str, bool, list[str]]]:
    """(name, cpu, extra server flags) of each server the part starts, the reference last."""
    if smoke:
        return [("cpu", True, [])]
    legacy = ["--disable-dynamic-vram"] if "--disable-dynamic-vram" in (comfyui / "comfy/cli_args.py").read_text() \
        else []
    return [("gpu_default", False, []), ("gpu_lowvram", False, ["--lowvram", *legacy]),
            ("gpu_novram", False, ["--novram"]), ("cpu_reference", True, [])]


def demo_prompt(prefix: str) -> dict:
    """The demo workflow's API export with a SaveLatent of the trimmed latent (``prefix``) beside its video."""
    prompt = json.loads((REPO / "workflows/api/im_animation_demo.json").read_text())
    trim = next(k for k, v in prompt.items() if v["class_type"] == "TrimVideoLatent")
    prompt["ima_check_latent"] = {"class_type": "SaveLatent", "inputs": {"samples": [trim, 0],
                                                                        "filename_prefix": prefix}}
    return prompt


SYNC_PROMPT = {"empty": {"class_type": "EmptyLatentImage", "inputs": {"width": 16, "height": 16, "batch_size": 1}},
               "save": {"class_type": "SaveLatent", "inputs": {"samples": ["empty", 0], "filename_prefix": "ima_sync"}}}


def unload_everything(server) -> None:
    """What the UI's "Unload models" does (POST /free: every model unloaded through comfy.model_management, the
    execution caches dropped), done before the next prompt starts. The prompt worker reads the flags when it
    wakes with an empty queue or after a prompt; a prompt queued at once can win that race and run first, with
    everything still loaded and cached. A trivial prompt after the request settles it: the flags are read
    before it runs or right after it."""
    status, _ = server.post("/free", {"unload_models": True, "free_memory": True})
    if status != 200:
        raise RuntimeError(f"POST /free answered {status}")
    from tools.server import assert_ok

    assert_ok(server.run(SYNC_PROMPT))
    time.sleep(1.0)


def _latent(server, prefix: str):
    from safetensors.torch import load_file

    files = sorted((server.base / "output").rglob(f"{prefix}*.latent"))
    if len(files) != 1:
        raise RuntimeError(f"expected one saved latent {prefix}*, found {files}")
    return load_file(str(files[0]))["latent_tensor"]


def compare(a, b) -> dict[str, float]:
    """max |a-b| and ||a-b|| / ||b||."""
    d = (a.double() - b.double())
    return {"max_abs_diff": float(d.abs().max()), "rel_l2": float(d.norm() / b.double().norm().clamp_min(1e-30))}


def run_demo_server(name: str, cpu: bool, flags: list[str], base: Path, item: dict) -> dict[str, Any]:
    from im_animation_core.eval.video_rows import image_metrics
    from im_animation_core.video import read_video
    from tools import demo_support as ds
    from tools.demo import install_models, run_prompt
    from tools.demo_set import DEMO_NAMES
    from tools.fixture_models import write_fixture_models
    from tools.media import DRIVING_NAME, IDENTITY_NAME
    from tools.server import ComfyServer

    server = ComfyServer(base=base, extra_args=flags, cpu=cpu)
    trained = install_models(server.models)
    if not trained:
        write_fixture_models(server.models, names=DEMO_NAMES)
    ds.write_pair_inputs(server.base / "input", item, IDENTITY_NAME, DRIVING_NAME)
    out: dict[str, Any] = {"flags": (["--cpu"] if cpu else []) + flags,
                           "weights": "trained demo set" if trained else "random fixture weights"}
    sampler = None if cpu else PeakSampler()
    runs = []
    try:
        if sampler:
            sampler.__enter__()
        t0 = time.perf_counter()
        server.start()
        out["server_start_s"] = time.perf_counter() - t0
        for i in range(2):
            if i:
                unload_everything(server)
            t0 = time.perf_counter()
            video = run_prompt(server, demo_prompt(f"ima_check_{i}"))
            loads = LOAD_LINE.findall(server.log())
            runs.append({"seconds": time.perf_counter() - t0, "latent": _latent(server, f"ima_check_{i}"),
                         "video": read_video(video).frames,
                         "loaded": sorted(set(loads[len(runs[-1]["_loads"]) if runs else 0:])), "_loads": loads})
        out["peak_rss_bytes"] = peak_rss_bytes(server.proc.pid) if server.proc else None
        log = server.log()
    except Exception as err:
        log = server.log()
        bad = WRONG_DEVICE.search(log)
        raise RuntimeError((f"a tensor on the wrong device: {bad.group(0)}; " if bad else "") + str(err)[-3000:]) \
            from None
    finally:
        if sampler:
            sampler.__exit__()
        server.stop()
    if WRONG_DEVICE.search(log):
        raise RuntimeError("the server log reports a tensor on the wrong device")
    first, second = runs
    for r in runs:
        import torch

        if not bool(torch.isfinite(r["latent"]).all()):
            raise RuntimeError(f"{name}: non-finite values in the saved latent")
    out["run_s"] = [r["seconds"] for r in runs]
    # what ComfyUI's model management loaded in each run (its "Requested to load" lines): after the unload the
    # second run must load the pack's modules again
    out["loaded_per_run"] = [r["loaded"] for r in runs]
    out["after_unload_equal"] = bool((first["latent"] == second["latent"]).all())
    out["after_unload"] = compare(second["latent"], first["latent"])
    metrics = image_metrics(item, first["video"])
    out["psnr"], out["ssim"] = (metrics["rows"]["result"]["psnr"], metrics["rows"]["result"]["ssim"])
    if sampler and sampler.peak_mib is not None and sampler.baseline_mib is not None:
        out["peak_gpu_mib"] = sampler.peak_mib - sampler.baseline_mib
    out["_latent"] = first["latent"]
    return out


def comfy_demo(smoke: bool, deadline: float) -> dict[str, Any]:
    from tools import demo_support as ds
    from tools.comfy_path import find_comfyui

    item = ds.demo_pair()
    report: dict[str, Any] = {"servers": {}}
    with tempfile.TemporaryDirectory(prefix="ima-gpu-demo-") as tmp:
        for name, cpu, flags in demo_variants(smoke, find_comfyui()):
            if time.time() > deadline:
                report["servers"][name] = {"skipped": "the part's time box ran out"}
                continue
            report["servers"][name] = run_demo_server(name, cpu, flags, Path(tmp) / name, item)
    servers = {k: v for k, v in report["servers"].items() if "_latent" in v}
    reference = servers.get("cpu_reference")
    problems = []
    for name, s in servers.items():
        if not s["after_unload_equal"]:
            problems.append(f"{name}: the run after unloading every model differs from the first "
                            f"({s['after_unload']})")
        if reference is not None and s is not reference:
            s["vs_cpu"] = compare(s["_latent"], reference["_latent"])
            s["vs_cpu"]["within_tolerance"] = s["vs_cpu"]["rel_l2"] <= DEMO_TOLERANCE
            if not s["vs_cpu"]["within_tolerance"]:
                problems.append(f"{name}: relative L2 {s['vs_cpu']['rel_l2']:.3g} from the CPU run, above "
                                f"{DEMO_TOLERANCE}")
    for s in servers.values():
        s.pop("_latent")
    report["tolerance_rel_l2"] = DEMO_TOLERANCE
    skipped = [k for k, v in report["servers"].items() if "skipped" in v]
    if skipped:
        problems.append(f"not run (time box): {skipped}")
    if problems:
        raise PartFailed("; ".join(problems), report)
    return report


class PartFailed(RuntimeError):
    """A part that ran but whose checks failed: its figures go into the report with the error."""

    def __init__(self, message: str, figures: dict):
        super().__init__(message)
        self.figures = figures


# ---- comfy_5b -----------------------------------------------------------------------------------------------
FULL_DIT = dict(dim=3072, ffn_dim=14336, num_layers=30, in_dim=48, out_dim=48, text_dim=4096)
WAN22_VAE = dict(dim=160, z_dim=48, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
                 temperal_downsample=[False, True, True], dropout=0.0)  # as comfy.sd.VAE builds it


def _init_on(module, seed: int) -> None:
    """tools.fixture_models._init_ on the module's own device (a 5B model is initialised on the GPU)."""
    import torch

    device = next(module.parameters()).device
    gen = torch.Generator(device=device).manual_seed(seed)
    for name, p in module.named_parameters():
        leaf = name.rsplit(".", 1)[-1]
        with torch.no_grad():
            if p.ndim >= 2 and leaf == "weight":
                p.copy_(torch.randn(p.shape, generator=gen, device=device, dtype=p.dtype) / p[0].numel() ** 0.5)
            elif leaf == "gamma" or (leaf == "weight" and p.ndim == 1):
                p.fill_(1.0)
            elif leaf == "bias":
                p.zero_()
            else:
                p.copy_(torch.randn(p.shape, generator=gen, device=device, dtype=p.dtype) * 0.02)


def write_5b_models(models: Path, device) -> dict[str, str]:
    """The full-size random model set in ComfyUI's models/ layout; returns {kind: file name}."""
    import comfy.ldm.wan.model
    import comfy.ldm.wan.vae2_2
    import comfy.ops
    import torch
    from safetensors.torch import save_file

    from im_animation_core.expression import ExpressionConfig
    from im_animation_core.modules import DiTSpec, IMAnimationModules
    from im_animation_core.retarget import RetargetConfig
    from im_animation_core.tokenizer import MotionTokenizer, MotionTokenizerConfig

    names = {"dit": "ima_check_wan22_5b_bf16.safetensors", "vae": "ima_check_wan22_vae.safetensors",
             "tokenizer": "ima_check_motion_encoder.safetensors", "modules": "ima_check_modules_5b.safetensors"}
    for sub in ("diffusion_models", "vae", "im_animation"):
        (models / sub).mkdir(parents=True, exist_ok=True)
    dit = comfy.ldm.wan.model.WanModel(model_type="t2v", num_heads=24, operations=comfy.ops.manual_cast,
                                       device=device, dtype=torch.bfloat16, **FULL_DIT)
    _init_on(dit, 0)
    save_file({k: v.contiguous().cpu() for k, v in dit.state_dict().items()},
              str(models / "diffusion_models" / names["dit"]))
    del dit
    vae = comfy.ldm.wan.vae2_2.WanVAE(**WAN22_VAE).to(device)
    _init_on(vae, 1)
    save_file({k: v.contiguous().cpu() for k, v in vae.state_dict().items()}, str(models / "vae" / names["vae"]))
    del vae
    torch.manual_seed(2)
    MotionTokenizer(MotionTokenizerConfig.large()).save(str(models / "im_animation" / names["tokenizer"]))
    torch.manual_seed(3)
    modules = IMAnimationModules(RetargetConfig(latent_channels=48), ExpressionConfig(),
                                 DiTSpec(dim=3072, heads=24, depth=30, latent_channels=48))
    with torch.no_grad():  # the zero-initialised adapters would make the patched model's extra work trivial
        modules.motion_patch.weight.normal_(0, 0.02)
        for block in modules.expression_blocks:
            block.attn.out.weight.normal_(0, 0.02)
    modules.save(str(models / "im_animation" / names["modules"]))
    return names


def _params_off(module, device) -> list[str]:
    """Names of the module's parameters and buffers that are not on ``device``."""
    import torch

    want = torch.device(device)
    return [n for n, t in [*module.named_parameters(), *module.named_buffers()]
            if t.device.type != want.type or (want.index is not None and t.device.index != want.index)]


def comfy_5b(smoke: bool, deadline: float) -> dict[str, Any]:
    import importlib

    import torch

    from tools.inprocess import PACKAGE, load_pack, stock_first_frame_latent

    load_pack()
    import comfy.model_management as mm
    import folder_paths

    import nodes as comfy_nodes

    def pack(name):
        return importlib.import_module(f"{PACKAGE}.{name}")

    device = mm.get_torch_device()
    cuda = device.type == "cuda"
    report: dict[str, Any] = {"load_device": str(device), "offload_device": str(mm.unet_offload_device()),
                              "text_encoder": "none: IM-Animation Conditioning's empty-text context",
                              "cfg": 1.0, "sampler": "euler", "runs": {}}
    with tempfile.TemporaryDirectory(prefix="ima-gpu-5b-") as tmp:
        models = Path(tmp)
        t0 = time.perf_counter()
        if smoke:
            from tools.fixture_models import write_fixture_models

            names = write_fixture_models(models)
            sizes, frames = [(64, 96), (96, 160)], 9
        else:
            names = write_5b_models(models, device)
            sizes, frames = [(480, 832), (704, 1280)], 81
        report["write_models_s"] = time.perf_counter() - t0
        for sub in ("diffusion_models", "vae", "im_animation"):
            folder_paths.add_model_folder_path(sub, str(models / sub), is_default=True)

        retarget, expression_node = pack("nodes.retarget"), pack("nodes.expression")
        tokenizer_node, apply, cond = pack("nodes.motion_tokenizer"), pack("nodes.apply"), pack("nodes.conditioning")
        t0 = time.perf_counter()
        vae = comfy_nodes.VAELoader().load_vae(names["vae"])[0]
        tokenizer = tokenizer_node.LoadMotionTokenizer.execute(names["tokenizer"], "auto").result[0]
        modules = retarget.LoadIMAnimationModules.execute(names["modules"]).result[0]
        report["load_pack_and_vae_s"] = time.perf_counter() - t0
        gen = torch.Generator().manual_seed(0)
        driving = torch.rand(frames, 256, 256, 3, generator=gen)
        mm.soft_empty_cache()
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        tokens = tokenizer_node.EncodeDrivingVideo.execute(tokenizer, driving, 24.0, 1, 0).result[0]
        if cuda:
            torch.cuda.synchronize()
        report["encode_driving_s"] = time.perf_counter() - t0
        report["encode_driving_frames_per_s"] = frames / report["encode_driving_s"]
        wrong = _params_off(tokenizer.model, tokenizer.load_device)
        if wrong:
            raise RuntimeError(f"the motion tokenizer ran with weights off its load device: {wrong[:5]}")
        expression = expression_node.ExpressionEncode.execute(modules, driving, tokens).result[0]

        problems = []
        for weight_dtype in ("default", "fp8_e4m3fn"):
            model = comfy_nodes.UNETLoader().load_unet(names["dit"], weight_dtype)[0]
            dm = model.get_model_object("diffusion_model")
            text_dim = dm.text_embedding[0].in_features
            empty = cond.empty_conditioning(text_dim)
            for h, w in sizes:
                key = f"{weight_dtype}@{w}x{h}"
                if time.time() > deadline:
                    report["runs"][key] = {"skipped": "the part's time box ran out"}
                    problems.append(f"{key} not run (time box)")
                    continue
                image = torch.rand(1, h, w, 3, generator=gen)
                rm = retarget.RetargetToIdentity.execute(modules, tokens, image, vae, w, h, frames).result[0]
                patched = apply.ApplyIMAnimation.execute(model, modules).result[0]
                positive, negative, latent = cond.IMAnimationConditioning.execute(rm, expression).result[:3]
                native_latent = stock_first_frame_latent(model, rm.identity_latent, latent["samples"].shape[2] - 1)
                sides = {"patched": (patched, positive, negative, latent), "native": (model, empty, empty,
                                                                                      native_latent)}
                seen_off: list[str] = []

                def sample(side: str, steps: int, sides=sides, seen_off=seen_off):
                    m, pos, neg, lat = sides[side]
                    if cuda:
                        torch.cuda.synchronize()
                    start = time.perf_counter()
                    out = comfy_nodes.common_ksampler(m, 1, steps, 1.0, "euler", "simple", pos, neg, lat)[0]
                    if cuda:
                        torch.cuda.synchronize()
                    if side == "patched":  # the modules are loaded with the model for sampling and stay so
                        seen_off.extend(_params_off(modules.model, modules.load_device))
                    return time.perf_counter() - start, out["samples"]

                if cuda:
                    torch.cuda.reset_peak_memory_stats(device)
                run: dict[str, Any] = {"latent": list(latent["samples"].shape)}
                for side in ("native", "patched"):  # warm-up: loading, kernel choice
                    _, out = sample(side, 1)
                    if not bool(torch.isfinite(out).all()):
                        raise RuntimeError(f"{key}: the {side} model gave non-finite latents")
                secs = {(side, n): sample(side, n)[0] for n in (1, 2) for side in ("native", "patched")}
                for side in ("native", "patched"):
                    run[f"{side}_s_per_step"] = secs[(side, 2)] - secs[(side, 1)]
                    run[f"{side}_1_step_call_s"] = secs[(side, 1)]
                # a per-step difference at tiny sizes can be swamped by setup noise; the whole calls then tell
                ratio_steps = run["patched_s_per_step"] / run["native_s_per_step"] \
                    if run["native_s_per_step"] > 0 and run["patched_s_per_step"] > 0 else None
                run["patched_over_native"] = ratio_steps
                run["patched_over_native_calls"] = (secs[("patched", 2)] + secs[("patched", 1)]) / (
                    secs[("native", 2)] + secs[("native", 1)])
                if cuda:
                    run["peak_bytes"], run["peak_kind"] = int(torch.cuda.max_memory_allocated(device)), \
                        "torch.cuda.max_memory_allocated"
                else:
                    run["peak_bytes"], run["peak_kind"] = peak_rss_bytes(os.getpid()), "process peak RSS"
                if seen_off:
                    problems.append(f"{key}: IM-Animation module weights off the load device while sampling: "
                                    f"{sorted(set(seen_off))[:5]}")
                report["runs"][key] = run
            del model, dm
            mm.unload_all_models()
            for name, patcher in (("modules", modules), ("motion tokenizer", tokenizer)):
                off = _params_off(patcher.model, patcher.offload_device)
                if off:
                    problems.append(f"after unloading every model the {name} kept weights off the offload "
                                    f"device: {off[:5]}")
            mm.soft_empty_cache()
    if not any("patched_s_per_step" in r for r in report["runs"].values()):
        problems.append("no resolution was sampled")
    if problems:
        raise PartFailed("; ".join(problems), report)
    return report


def finite_positive(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x > 0


def main_child(part: str, smoke: bool, deadline: float, out: Path) -> int:
    """Run one part in this process and write {"ok", figures..., "error"} to ``out``."""
    fn = {"comfy_demo": comfy_demo, "comfy_5b": comfy_5b}[part]
    try:
        result = {"ok": True, **fn(smoke, deadline)}
    except PartFailed as err:
        result = {"ok": False, **err.figures, "error": str(err)}
    except Exception as err:  # noqa: BLE001 - a failed part is recorded and the next one runs
        import traceback

        result = {"ok": False, "error": f"{type(err).__name__}: {err}"[-4000:],
                  "traceback": traceback.format_exc()[-4000:]}
    out.write_text(json.dumps(result, indent=1, default=str) + "\n")
    return 0

