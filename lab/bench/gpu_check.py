"""GPU check: this pack through ComfyUI on one CUDA GPU, and the Wan2.2 TI2V-5B pipeline's cost; nothing
downloaded (random weights, made on the machine's disk).

    bash scripts/gpu_check.sh OUT.json            # one GPU, at most 8 minutes; OUT.json + OUT.md
    bash scripts/gpu_check.sh --smoke OUT.json    # every part at tiny sizes on the CPU (the unit test)

Parts, most valuable first; each runs in a child process with its own time box (a part that fails, crashes or
runs out of time is recorded with its error, and the next one runs; a part left less time than it needs is
recorded as not run):
1. ``comfy_demo`` (lab/bench/gpu_comfy.py): the demo workflow through the real ComfyUI server on the GPU with
   default flags, ``--lowvram`` and ``--novram``, against a ``--cpu`` run of the same seed; unload-and-rerun
   equality, peak GPU memory, seconds.
2. ``comfy_5b`` (lab/bench/gpu_comfy.py): the 5B pipeline at its exact shapes (bf16 and fp8_e4m3fn weights through
   the stock UNETLoader, 81 frames at 480x832 and 704x1280), patched vs native s/step through KSampler's
   function, peak memory, the pack's modules on the right device.
3. ``tokenizer``: the released-size motion tokenizer (ViT-L, 303 M) encoding one 81-frame clip in bf16:
   frames/s, and TFLOP/s by its 183 GFLOP per frame (lab.bench.bench_tokenizer.flops_per_frame).
4. ``fsdp_step``: the Stage-3 trainer (train.trainer.Trainer, strategy "fsdp" over a process group of this
   one GPU, bf16 compute, fp32 master weights, per-block activation checkpointing) on the full model: the 5B
   DiT + the modules at their default sizes + the tokenizer (frozen: its tokens are given, as from a clip
   cache), AdamW, at 81 frames of 480x832 with random cached latents. Two optimizer steps; the second's
   seconds and the peak CUDA memory. No checkpoint is written.
Optional (``--parts sampling``): one sampling step of this pack's own 5B DiT (not ComfyUI's), native vs
patched (the motion patch and the five expression blocks after blocks 5, 11, 17, 23, 29).

The report: ``{"device", "driver", "torch", "smoke", "wall_s", "parts": {part: {"ok": bool, figures...,
"error" when not ok}}}``, and a Markdown summary beside it (OUT.md).

``--smoke`` swaps in tiny sizes (the fixture model set, a 6-block dim-128 DiT on 48 channels, a 1-layer
tokenizer, 5 frames of 64x64) and the CPU (gloo, float32), so that a unit test runs every line of the logic.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import os
import resource
import socket
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from im_animation_core.expression import ExpressionBlock, ExpressionConfig
from im_animation_core.frames import latent_frame_count
from im_animation_core.injection import REFERENCE_FRAMES
from im_animation_core.modules import DiTSpec
from im_animation_core.retarget import RetargetConfig
from im_animation_core.tokenizer import MotionTokenizer, MotionTokenizerConfig
from im_animation_core.tokenizer.testing import random_state_dict
from im_animation_core.wan.config import WanDiTConfig
from im_animation_core.wan.model import WanDiT, parameter_count
from lab.bench.bench_tokenizer import flops_per_frame
from lab.bench.bench_tokenizer import frames as tokenizer_frames

# Wan2.2's VAE: 4x temporal, 16x16 spatial; the 5B DiT's patch (1, 2, 2)
SPATIAL_COMPRESSION = 16


@dataclasses.dataclass
class Sizes:
    dit: WanDiTConfig
    tokenizer: MotionTokenizerConfig
    modules: dict
    frames: int
    height: int
    width: int
    text_len: int
    repeats: int


def sizes(smoke: bool) -> Sizes:
    if smoke:
        dit = WanDiTConfig(dim=128, ffn_dim=256, num_heads=2, num_layers=6, in_dim=48, out_dim=48, text_dim=4096)
        tok = MotionTokenizerConfig(width=64, layers=1, heads=1, codebook_size=64)  # 256x256 frames, as released
        modules = {"retarget": {"width": 64, "depth": 1, "heads": 2, "heatmap_channels": 16},
                   "expression": {"crop_size": 32, "width": 32, "tokens": 4, "base_channels": 8}}
        return Sizes(dit, tok, modules, frames=5, height=64, width=64, text_len=8, repeats=1)
    return Sizes(WanDiTConfig.ti2v_5b(), MotionTokenizerConfig.large(), {}, frames=81, height=480, width=832,
                 text_len=512, repeats=3)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _free(device: torch.device) -> None:
    import gc

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def latent_grid(s: Sizes) -> tuple[int, int, int]:
    """(latent frames of the clip, latent height, latent width)."""
    return latent_frame_count(s.frames), s.height // SPATIAL_COMPRESSION, s.width // SPATIAL_COMPRESSION


# ---- 1. the motion tokenizer ----------------------------------------------------------------------------
@torch.no_grad()
def check_tokenizer(s: Sizes, device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
    config = s.tokenizer
    model = MotionTokenizer.from_state_dict(random_state_dict(config, seed=0), config=config, device=device,
                                            dtype=dtype)
    x = tokenizer_frames(s.frames, seed=1).to(device)
    model.encode(x)  # warm-up (kernel choice, allocator)
    walls = []
    for _ in range(s.repeats):
        _sync(device)
        t0 = time.perf_counter()
        model.encode(x)
        _sync(device)
        walls.append(time.perf_counter() - t0)
    best = min(walls)
    per_frame = flops_per_frame(config)
    del model
    _free(device)
    return {"frames": s.frames, "dtype": str(dtype).replace("torch.", ""), "seconds": best,
            "frames_per_s": s.frames / best, "gflop_per_frame": per_frame / 1e9,
            "tflop_per_s": per_frame * s.frames / best / 1e12}


# ---- 2. patched / native sampling step ---------------------------------------------------------------------
@torch.no_grad()
def check_sampling(s: Sizes, device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
    c = s.dit
    motion_channels = RetargetConfig().out_channels
    spec = DiTSpec(c.dim, c.num_heads, c.num_layers, c.in_dim)
    expression = ExpressionConfig(**s.modules.get("expression", {}))
    torch.manual_seed(0)
    with torch.device(device):  # built where it runs: a 5B model initialised on the GPU, then cast
        dit = WanDiT(c, motion_channels=motion_channels)
        blocks = [ExpressionBlock(c.dim, c.num_heads, expression.width) for _ in spec.expression_block_indices]
    dit.to(dtype).eval()
    for b in blocks:
        b.to(dtype).eval()
    for b in blocks:  # zero-initialised outputs would make the blocks free to skip in principle: give weights
        torch.nn.init.normal_(b.attn.out.weight, std=0.02)
    motion_patch = dit.motion_patch
    f, h, w = latent_grid(s)
    frames = REFERENCE_FRAMES + f
    gen = torch.Generator(device="cpu").manual_seed(0)
    x = torch.randn(1, c.in_dim, frames, h, w, generator=gen).to(device, dtype)
    t = torch.full((1,), 500.0, device=device)
    context = torch.randn(1, s.text_len, c.text_dim, generator=gen).to(device, dtype)
    motion = torch.randn(1, motion_channels, frames, h, w, generator=gen).to(device, dtype)
    tokens = torch.randn(f, expression.tokens, expression.width, generator=gen).to(device, dtype)
    hooks = {i: functools.partial(block, expression=tokens, skip_frames=REFERENCE_FRAMES)
             for i, block in zip(spec.expression_block_indices, blocks, strict=True)}

    def native() -> torch.Tensor:
        dit.attach_motion_patch(None)
        try:
            return dit(x, t, context)
        finally:
            dit.attach_motion_patch(motion_patch)

    def patched() -> torch.Tensor:
        return dit(x, t, context, motion=motion, block_hooks=hooks)

    times: dict[str, list[float]] = {"native": [], "patched": []}
    for name, fn in (("native", native), ("patched", patched)):  # warm-up
        out = fn()
        if not bool(torch.isfinite(out).all()):
            raise RuntimeError(f"the {name} DiT step gave non-finite values")
    for _ in range(s.repeats):  # alternating, so that a drifting clock slows both alike
        for name, fn in (("native", native), ("patched", patched)):
            _sync(device)
            t0 = time.perf_counter()
            fn()
            _sync(device)
            times[name].append(time.perf_counter() - t0)
    params = sum(p.numel() for p in dit.parameters()) - sum(p.numel() for p in motion_patch.parameters())
    native_s, patched_s = statistics.median(times["native"]), statistics.median(times["patched"])
    return {"dit_params": params, "dtype": str(dtype).replace("torch.", ""), "latent": [frames, h, w],
            "tokens": frames * (h // c.patch_size[1]) * (w // c.patch_size[2]),
            "native_s": native_s, "patched_s": patched_s, "patched_over_native": patched_s / native_s,
            "expression_blocks": spec.expression_block_indices}


# ---- 3. one FSDP Stage-3 step -------------------------------------------------------------------------------
class _NoVAE:
    """The batches are cached latents: a VAE call would be a bug."""

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("the GPU check feeds cached latents; the VAE must not be called")


class CachedLike(torch.utils.data.Dataset):
    """``n`` copies of one random sample with the fields of a Stage-3 clip cache (train.cache): latents of the
    identity [C,1,h,w] and of the clip [C,F,h,w], the frozen tokenizer's tokens [T,L,C_tok], the target
    joints [T,J,2] / visibility [T,J], the frame size [2] and the driving face crops [T,3,S,S]."""

    def __init__(self, s: Sizes, joints: int, crop_size: int, n: int):
        f, h, w = latent_grid(s)
        gen = torch.Generator().manual_seed(0)
        t, c = s.frames, s.dit.in_dim
        self.n = n
        self.sample = {
            "identity_latent": torch.randn(c, 1, h, w, generator=gen),
            "target_latent": torch.randn(c, f, h, w, generator=gen),
            "tokens": torch.randn(t, s.tokenizer.num_latent_tokens, s.tokenizer.token_size, generator=gen),
            "target_joints": torch.rand(t, joints, 2, generator=gen) * torch.tensor([s.width, s.height]),
            "target_visible": torch.ones(t, joints, dtype=torch.bool),
            "frame_size": torch.tensor([s.height, s.width], dtype=torch.int64),
            "face_crops": torch.rand(t, 3, crop_size, crop_size, generator=gen),
        }

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return dict(self.sample)


def stage3_config(s: Sizes, device: torch.device, out_dir: Path) -> dict[str, Any]:
    c = s.dit
    return {
        "output_dir": str(out_dir), "steps": 2, "batch_size": 1, "log_every": 1, "save_every": 1000,
        "progress": False, "device": device.type, "strategy": "fsdp",
        "mixed_precision": "bf16" if device.type == "cuda" else "no", "text_len": s.text_len,
        "data": {"frames": s.frames, "size": s.height},
        "tokenizer": {"config": dataclasses.asdict(s.tokenizer), "trainable": False},
        "modules": dict(s.modules),
        "dit": {"dim": c.dim, "ffn_dim": c.ffn_dim, "num_heads": c.num_heads, "num_layers": c.num_layers,
                "in_dim": c.in_dim, "out_dim": c.out_dim, "text_dim": c.text_dim, "gradient_checkpointing": True,
                "dtype": "float32"},
        "vae": {},
    }


def check_fsdp_step(s: Sizes, device: torch.device) -> dict[str, Any]:
    from im_animation_core.train import Trainer, config_from_dict

    with tempfile.TemporaryDirectory() as tmp:
        config = config_from_dict("stage3", stage3_config(s, device, Path(tmp)))
        torch.manual_seed(0)
        t0 = time.perf_counter()
        trainer = Trainer("stage3", config, vae=_NoVAE())
        build_s = time.perf_counter() - t0
        if not trainer.sharded:
            raise RuntimeError("the trainer did not shard the model (no process group?)")
        rt = trainer.model.ima.retarget.config
        crop = trainer.model.ima.expression_encoder.config.crop_size
        trainer.dataset = CachedLike(s, rt.heatmap_joints, crop, n=2 * trainer.info.world_size)
        trainer.save_checkpoint = lambda: None  # 66 GB of sharded state at 5B: not what this measures
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        trainer.output_dir.mkdir(parents=True, exist_ok=True)
        last = trainer._loop()
        records = [json.loads(line) for line in (trainer.output_dir / "metrics.jsonl").read_text().splitlines()]
        peak = (torch.cuda.max_memory_allocated(device) if device.type == "cuda"
                else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
        trainable = sum(p.numel() for g in trainer.optimizer.param_groups for p in g["params"])
        trainer.close()
        del trainer
    _free(device)
    if not all(math.isfinite(r["loss"]) for r in records):
        raise RuntimeError(f"non-finite loss in the FSDP step: {records}")
    return {"steps": len(records), "sec_per_step": records[-1]["sec_per_step"], "first_step_s":
            records[0]["sec_per_step"], "build_s": build_s, "loss": last["loss"], "grad_norm": last["grad_norm"],
            "trainable_params": trainable, "peak_bytes": int(peak),
            "peak_kind": "torch.cuda.max_memory_allocated" if device.type == "cuda" else "process max RSS",
            "frames": s.frames, "size": [s.height, s.width], "gradient_checkpointing": True}


# ---- main -----------------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def init_process_group(device: torch.device) -> bool:
    """A process group for FSDP: torchrun's when launched by it, else one of this process. True when
    created here."""
    if dist.is_initialized():
        return False
    if "WORLD_SIZE" not in os.environ:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()), RANK="0", WORLD_SIZE="1",
                          LOCAL_RANK="0")
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return True


def run_in_process(part: str, smoke: bool) -> dict[str, Any]:
    """One of the parts of this module (tokenizer, sampling, fsdp_step) in this process."""
    s = sizes(smoke)
    if smoke:
        device, dtype = torch.device("cpu"), torch.float32
    else:
        if not torch.cuda.is_available():
            raise RuntimeError("the GPU check needs a CUDA device (--smoke runs its logic on the CPU)")
        device, dtype = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0"))), torch.bfloat16
        torch.cuda.set_device(device)
    if part == "tokenizer":
        return check_tokenizer(s, device, dtype)
    if part == "sampling":
        return {"dit_config_params": parameter_count(s.dit), **check_sampling(s, device, dtype)}
    created = init_process_group(device)
    try:
        return check_fsdp_step(s, device)
    finally:
        if created:
            dist.destroy_process_group()


PARTS = ("comfy_demo", "comfy_5b", "tokenizer", "fsdp_step")
OPTIONAL_PARTS = ("sampling",)
TOTAL_S = {False: 470, True: 290}  # the whole check: 8 minutes on a GPU (less the start), 5 on the CPU
# {part: (time box, the least time worth starting it with)}, seconds
BOXES = {False: {"comfy_demo": (200, 90), "comfy_5b": (210, 120), "tokenizer": (45, 20), "fsdp_step": (150, 100),
                 "sampling": (90, 60)},
         True: {"comfy_demo": (200, 30), "comfy_5b": (200, 30), "tokenizer": (60, 5), "fsdp_step": (120, 10),
                "sampling": (60, 5)}}


def run_child(part: str, smoke: bool, box_s: float, work: Path) -> dict[str, Any]:
    """Run ``part`` in a child process (its own CUDA context and memory, freed when it exits), killed with all
    it started when ``box_s`` runs out. The child stops starting new measurements at 80% of the box."""
    import signal
    import subprocess
    import sys

    out = work / f"{part}.json"
    log = work / f"{part}.log"
    cmd = [sys.executable, "-m", "lab.bench.gpu_check", "--child", part, "--part-out", str(out),
           "--deadline", str(time.time() + 0.8 * box_s), *(["--smoke"] if smoke else [])]
    t0 = time.perf_counter()
    with open(log, "w") as log_file:
        proc = subprocess.Popen(cmd, cwd=Path(__file__).resolve().parents[2], stdout=log_file,
                                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            code = proc.wait(timeout=box_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the child's session: it and the servers it started
            proc.wait()
            code = None
    wall = time.perf_counter() - t0
    tail = log.read_text(errors="replace")[-3000:]
    if code is None:
        return {"ok": False, "error": f"killed at its time box of {box_s:.0f} s", "log_tail": tail, "wall_s": wall}
    if not out.is_file():
        return {"ok": False, "error": f"the part's process exited with {code} and no report", "log_tail": tail,
                "wall_s": wall}
    result = json.loads(out.read_text())
    result["wall_s"] = wall
    if not result.get("ok"):
        result["log_tail"] = tail
    return result


def device_info(smoke: bool) -> dict[str, Any]:
    import subprocess

    info: dict[str, Any] = {"device": "cpu", "driver": None, "torch": torch.__version__}
    if not smoke and torch.cuda.is_available():
        info["device"] = torch.cuda.get_device_name(0)
        try:
            q = subprocess.run(["nvidia-smi", "--query-gpu=driver_version,memory.total", "--format=csv,noheader",
                                "-i", "0"], capture_output=True, text=True, timeout=10)
            info["driver"], info["gpu_memory"] = [x.strip() for x in q.stdout.strip().split(",")][:2]
        except (OSError, ValueError, subprocess.TimeoutExpired):
            pass
    return info


def run(smoke: bool, parts: list[str], work: Path) -> dict[str, Any]:
    report: dict[str, Any] = {**device_info(smoke), "smoke": smoke, "parts": {}}
    start = time.perf_counter()
    for part in parts:
        box, least = BOXES[smoke][part]
        left = TOTAL_S[smoke] - (time.perf_counter() - start)
        if left < least:
            report["parts"][part] = {"ok": False, "error": f"not run: {left:.0f} s of the check's "
                                                             f"{TOTAL_S[smoke]} s left, the part needs {least} s"}
        else:
            report["parts"][part] = run_child(part, smoke, min(box, left), work)
        print(json.dumps({part: {k: v for k, v in report["parts"][part].items() if k != "log_tail"}},
                         default=str), flush=True)
    report["wall_s"] = time.perf_counter() - start
    return report


def _figure(x) -> str:
    if isinstance(x, float):
        return f"{x:.4g}"
    return str(x)


SUMMARY_KEYS = {
    "comfy_demo": None,
    "comfy_5b": None,
    "tokenizer": ("frames_per_s", "tflop_per_s", "seconds", "dtype"),
    "fsdp_step": ("sec_per_step", "peak_bytes", "build_s", "loss"),
    "sampling": ("native_s", "patched_s", "patched_over_native"),
}


def markdown(report: dict[str, Any]) -> str:
    """The report as Markdown: a line per part, then its figures."""
    lines = [f"# GPU check{' (smoke: tiny sizes on the CPU)' if report['smoke'] else ''}", "",
             f"device: {report['device']}; driver: {report.get('driver')}; torch {report['torch']}; "
             f"wall {report.get('wall_s', 0):.0f} s", "", "| part | ok | wall s | error |", "|---|---|---:|---|"]
    for part, r in report["parts"].items():
        err = str(r.get("error", "")).replace("|", "/").replace("\n", " ")[:300]
        lines.append(f"| {part} | {'yes' if r.get('ok') else 'NO'} | {_figure(r.get('wall_s', ''))} | {err} |")
    for part, r in report["parts"].items():
        lines += ["", f"## {part}", ""]
        if part == "comfy_demo":
            lines += ["| server | flags | run s | peak GPU MiB | peak RSS bytes | equal after unload | rel L2 vs CPU "
                      "| PSNR | SSIM |", "|---|---|---|---:|---:|---|---:|---:|---:|"]
            for name, s in r.get("servers", {}).items():
                lines.append(f"| {name} | {' '.join(s.get('flags', []))} | "
                             f"{', '.join(_figure(x) for x in s.get('run_s', []))} | {_figure(s.get('peak_gpu_mib'))} "
                             f"| {_figure(s.get('peak_rss_bytes'))} | "
                             f"{s.get('after_unload_equal', s.get('skipped'))} | "
                             f"{_figure(s.get('vs_cpu', {}).get('rel_l2'))} | {_figure(s.get('psnr'))} | "
                             f"{_figure(s.get('ssim'))} |")
        elif part == "comfy_5b":
            lines += ["| weights @ size | native s/step | patched s/step | patched / native | peak bytes |",
                      "|---|---:|---:|---:|---:|"]
            for key, run in r.get("runs", {}).items():
                lines.append(f"| {key} | {_figure(run.get('native_s_per_step'))} | "
                             f"{_figure(run.get('patched_s_per_step'))} | {_figure(run.get('patched_over_native'))} "
                             f"| {_figure(run.get('peak_bytes'))} |")
            lines.append(f"\nmotion tokenizer through Encode Driving Video: "
                         f"{_figure(r.get('encode_driving_frames_per_s'))} frames/s")
        else:
            for k in SUMMARY_KEYS.get(part) or []:
                if k in r:
                    lines.append(f"- {k}: {_figure(r[k])}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU (tests the logic)")
    ap.add_argument("--parts", nargs="+", choices=PARTS + OPTIONAL_PARTS, default=list(PARTS))
    ap.add_argument("--out", type=Path, help="write the JSON report here, and its Markdown beside it (.md)")
    ap.add_argument("--child", choices=PARTS + OPTIONAL_PARTS, help=argparse.SUPPRESS)
    ap.add_argument("--part-out", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--deadline", type=float, default=math.inf, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return run_child_part(args.child, args.smoke, args.deadline, args.part_out)
    with tempfile.TemporaryDirectory(prefix="ima-gpu-check-") as work:
        report = run(args.smoke, args.parts, Path(work))
    text = json.dumps(report, indent=2, default=str)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n", encoding="utf-8")
        args.out.with_suffix(".md").write_text(markdown(report), encoding="utf-8")
    print(markdown(report))
    return report


def run_child_part(part: str, smoke: bool, deadline: float, out: Path) -> dict[str, Any]:
    if part in ("comfy_demo", "comfy_5b"):
        from lab.bench.gpu_comfy import main_child

        main_child(part, smoke, deadline, out)
        return {}
    try:
        result = {"ok": True, **run_in_process(part, smoke)}
    except Exception as err:  # noqa: BLE001 - a failed part is recorded and the next one runs
        import traceback

        result = {"ok": False, "error": f"{type(err).__name__}: {err}"[-4000:],
                  "traceback": traceback.format_exc()[-4000:]}
    out.write_text(json.dumps(result, indent=1, default=str) + "\n")
    return result


if __name__ == "__main__":
    main()
