"""GPU check of the paper-scale path (Wan2.2 TI2V-5B), on one CUDA GPU, nothing downloaded (random weights).

    bash scripts/gpu_check.sh [OUT.json]          # one GPU, well under 10 minutes on an H200
    python -m bench.gpu_check --smoke [--out F]   # the same code at tiny sizes on the CPU (the unit test)

Three measurements, printed as one JSON object (and written to --out):
1. ``tokenizer``: the released-size motion tokenizer (ViT-L, 303 M) encoding one 81-frame clip in bf16:
   frames/s, and TFLOP/s by its 183 GFLOP per frame (bench.bench_tokenizer.flops_per_frame).
2. ``sampling``: one sampling step of the full 5B DiT (random init, bf16, no grad) at 81 frames of 480x832
   (22 latent frames with the reference, 30 x 52 latent), native (no motion input, no expression blocks)
   and patched as the sampler node patches it (the motion patch on the retargeted-motion channels and the
   five expression blocks after blocks 5, 11, 17, 23, 29); the median times and patched / native. This is
   this pack's own DiT, not ComfyUI's (bench/bench_injection.py measures ComfyUI's, end to end, at small
   sizes).
3. ``fsdp_step``: the Stage-3 trainer (train.trainer.Trainer, strategy "fsdp" over a process group of this
   one GPU, bf16 compute, fp32 master weights, per-block activation checkpointing) on the full model: the 5B
   DiT + the modules at their default sizes + the tokenizer (frozen: its tokens are given, as from a clip
   cache), AdamW, at 81 frames of 480x832 with random cached latents. Two optimizer steps; the second's
   seconds and the peak CUDA memory. No checkpoint is written.

``--smoke`` swaps in tiny sizes (a 6-block dim-128 DiT on 48 channels, a 1-layer tokenizer, 5 frames of
64x64) and the CPU (gloo, float32), so that a unit test runs every line of the logic.
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

from bench.bench_tokenizer import flops_per_frame
from bench.bench_tokenizer import frames as tokenizer_frames
from im_animation_core.expression import ExpressionBlock, ExpressionConfig
from im_animation_core.frames import latent_frame_count
from im_animation_core.injection import REFERENCE_FRAMES
from im_animation_core.modules import DiTSpec
from im_animation_core.retarget import RetargetConfig
from im_animation_core.tokenizer import MotionTokenizer, MotionTokenizerConfig
from im_animation_core.tokenizer.testing import random_state_dict
from im_animation_core.wan.config import WanDiTConfig
from im_animation_core.wan.model import WanDiT, parameter_count

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


def run(smoke: bool, parts: list[str]) -> dict[str, Any]:
    s = sizes(smoke)
    if smoke:
        device, dtype = torch.device("cpu"), torch.float32
    else:
        if not torch.cuda.is_available():
            raise SystemExit("the GPU check needs a CUDA device (python -m bench.gpu_check --smoke runs its logic "
                             "on the CPU)")
        device, dtype = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0"))), torch.bfloat16
        torch.cuda.set_device(device)
    report: dict[str, Any] = {"smoke": smoke, "device": torch.cuda.get_device_name(device) if device.type == "cuda"
                              else "cpu", "torch": torch.__version__,
                              "dit_config_params": parameter_count(s.dit)}
    t_all = time.perf_counter()
    for part in parts:
        t0 = time.perf_counter()
        if part == "tokenizer":
            report[part] = check_tokenizer(s, device, dtype)
        elif part == "sampling":
            report[part] = check_sampling(s, device, dtype)
        elif part == "fsdp_step":
            created = init_process_group(device)
            try:
                report[part] = check_fsdp_step(s, device)
            finally:
                if created:
                    dist.destroy_process_group()
        _free(device)  # the part's models are gone with its frame: give their memory back before the next
        report[part]["wall_s"] = time.perf_counter() - t0
        print(json.dumps({part: report[part]}), flush=True)
    report["wall_s"] = time.perf_counter() - t_all
    return report


PARTS = ("tokenizer", "sampling", "fsdp_step")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU (tests the logic)")
    ap.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    ap.add_argument("--out", type=Path, help="write the JSON report here")
    args = ap.parse_args(argv)
    report = run(args.smoke, args.parts)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n", encoding="utf-8")
    return report


if __name__ == "__main__":
    main()
