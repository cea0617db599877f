"""Memory and time plan of a Stage-3 run (``python -m im_animation_core.train plan``), from the real models
built on the meta device (no memory): the WanDiT at the config's sizes, the IM-Animation modules and the
motion tokenizer.

Per rank, with N ranks and FSDP-style sharding (PyTorch FSDP2, ``fully_shard`` per block and on the root,
``MixedPrecisionPolicy(param_dtype=bfloat16, reduce_dtype=float32)``), for P trained and Q frozen parameters:

- parameters: the float32 master weights, sharded, 4 P / N, and the frozen ones as bfloat16 shards, 2 Q / N;
- gradients: float32 shards, 4 P / N;
- optimizer: AdamW's two float32 moments, 8 P / N;
- FSDP working buffers (not sharded): the bfloat16 copies of two gathered blocks (the one computing and the
  one prefetched) and one block's unsharded gradient in bfloat16 and float32 for the reduce-scatter, sized by
  the largest block;
- the frozen VAE, unsharded bfloat16, when the clips are encoded during training (no ``data.cache``);
- activations: ``plan_activations`` (formulas and what they leave out), for ``batch_size`` clips per rank,
  ``dit_draws`` noise draws per clip in the DiT; "checkpointed" recomputes each DiT block in the backward pass
  (``dit.gradient_checkpointing``); the tokenizer and retargeter run as the trainer runs them (no
  checkpointing).

A run fits when the sum stays under the GPU memory less a reserve (``--reserve``, default 10 %) for the CUDA
context, communication buffers and allocator fragmentation, none of which is modelled.

Time: the matmul FLOPs of a step per rank (forward x3 for what is trained, +1 forward of the DiT when it is
checkpointed, x1 for frozen modules), at an assumed peak and utilisation: an estimate, not a measurement.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..checkpoints import json_metadata
from ..expression import ExpressionConfig
from ..keypoints import NUM_JOINTS
from ..modules import DiTSpec, IMAnimationModules
from ..retarget import RetargetConfig
from ..tokenizer import MotionTokenizer, MotionTokenizerConfig
from ..wan import WanDiT
from . import plan_activations as act
from .build import dit_config, dit_sizes
from .config import ConfigError, Stage3Config

GIB = 2**30
PAPER_FRAMES, PAPER_HEIGHT, PAPER_WIDTH = 81, 704, 1280  # the paper's clips (facts section 3: 1280x704)
# Latent channels -> the VAE's spatial compression (Wan2.2 VAE: 48 channels, x16; Wan2.1: 16 channels, x8).
SPATIAL_RATIO = {48: 16, 16: 8}
TEMPORAL_RATIO = 4


@dataclass
class PlanOptions:
    gpus: int
    gpu_memory_gib: float = 80.0
    frames: int = PAPER_FRAMES
    height: int = PAPER_HEIGHT
    width: int = PAPER_WIDTH
    reserve: float = 0.10
    peak_tflops: float = 989.0  # H100 SXM, dense bf16
    utilization: float = 0.35

    def __post_init__(self):
        if self.gpus < 1:
            raise ConfigError(f"--gpus must be at least 1, got {self.gpus}")
        if self.gpu_memory_gib <= 0 or not 0 <= self.reserve < 1:
            raise ConfigError("--gpu-memory must be > 0 and --reserve in [0, 1)")
        if self.frames < 1 or self.frames % TEMPORAL_RATIO != 1:
            raise ConfigError(f"--frames is {self.frames}; Wan clips have 4k+1 frames (e.g. 81)")
        if self.peak_tflops <= 0 or not 0 < self.utilization <= 1:
            raise ConfigError("--peak-tflops must be > 0 and --utilization in (0, 1]")


@dataclass
class Part:
    """One model of the Stage-3 step, built on the meta device."""

    name: str
    module: nn.Module
    trainable: bool
    largest_block: int  # parameters of its largest FSDP unit (a transformer block)

    @property
    def params(self) -> int:
        return sum(p.numel() for p in self.module.parameters())


@dataclass
class MemoryPlan:
    options: PlanOptions
    parts: list[Part]
    latent: tuple[int, int, int]  # latent frames of the clip (without the identity frame), height, width
    dit_tokens: int  # per sample, identity frame included
    batch: int
    draws: int
    notes: list[str] = field(default_factory=list)
    vae_params: int = 0
    activations: dict[str, act.Saved] = field(default_factory=dict)
    activations_checkpointed: dict[str, act.Saved] = field(default_factory=dict)
    flops: int = 0  # per rank and step, checkpointed

    @property
    def trainable_params(self) -> int:
        return sum(p.params for p in self.parts if p.trainable)

    @property
    def frozen_params(self) -> int:
        return sum(p.params for p in self.parts if not p.trainable)

    def static_bytes(self) -> dict[str, float]:
        """Per-rank bytes that do not depend on activation checkpointing."""
        n, p, q = self.options.gpus, self.trainable_params, self.frozen_params
        unit = max(part.largest_block for part in self.parts)
        return {
            "parameters": (4 * p + 2 * q) / n,
            "gradients": 4 * p / n,
            "optimizer": 8 * p / n,
            "fsdp_buffers": 2 * 2 * unit + (2 + 4) * unit,
            "vae": 2 * self.vae_params,
        }

    def activation_bytes(self, checkpointing: bool) -> int:
        saved = self.activations_checkpointed if checkpointing else self.activations
        return sum(s.bytes for s in saved.values())

    def total_bytes(self, checkpointing: bool) -> float:
        return sum(self.static_bytes().values()) + self.activation_bytes(checkpointing)

    @property
    def budget_bytes(self) -> float:
        return self.options.gpu_memory_gib * GIB * (1 - self.options.reserve)

    def fits(self, checkpointing: bool) -> bool:
        return self.total_bytes(checkpointing) <= self.budget_bytes

    def hours_per_1k_steps(self) -> float:
        o = self.options
        return 1000 * self.flops / (o.peak_tflops * 1e12 * o.utilization) / 3600

    def to_dict(self) -> dict:
        return {
            "gpus": self.options.gpus, "gpu_memory_gib": self.options.gpu_memory_gib,
            "clip": {"frames": self.options.frames, "height": self.options.height, "width": self.options.width},
            "latent": list(self.latent), "dit_tokens": self.dit_tokens, "batch": self.batch, "draws": self.draws,
            "params": {p.name: {"count": p.params, "trainable": p.trainable} for p in self.parts},
            "trainable_params": self.trainable_params, "frozen_params": self.frozen_params,
            "vae_params": self.vae_params,
            "bytes": {**self.static_bytes(),
                      "activations": self.activation_bytes(False),
                      "activations_checkpointed": self.activation_bytes(True),
                      "total": self.total_bytes(False), "total_checkpointed": self.total_bytes(True)},
            "activations": {k: v.bytes for k, v in self.activations.items()},
            "activations_checkpointed": {k: v.bytes for k, v in self.activations_checkpointed.items()},
            "budget_bytes": self.budget_bytes, "fits": self.fits(False), "fits_checkpointed": self.fits(True),
            "flops_per_step": self.flops, "hours_per_1k_steps": self.hours_per_1k_steps(),
            "notes": self.notes,
        }


# ---- the models on the meta device ---------------------------------------------------------------------------
def _existing(path: str) -> bool:
    return bool(path) and Path(path).is_file()


def _module_sizes(config: Stage3Config, notes: list[str]) -> tuple[dict, dict]:
    """(retarget, expression) size overrides: the modules file's metadata when the file is here, else the
    config's ``modules.retarget`` / ``modules.expression``."""
    m = config.modules
    if _existing(m.path):
        return json_metadata(m.path, "retarget", "IM-Animation modules"), json_metadata(
            m.path, "expression", "IM-Animation modules")
    if m.path:
        notes.append(f"modules.path '{m.path}' is not here: module sizes from modules.retarget / modules.expression")
    return dict(m.retarget), dict(m.expression)


def build_parts(config: Stage3Config, notes: list[str]) -> tuple[list[Part], DiTSpec]:
    """The Stage-3 models on the meta device, each flagged trainable as the trainer sets it."""
    if config.motion_encoder != "tokenizer":
        raise ConfigError(f"config field 'motion_encoder' is '{config.motion_encoder}'; the plan covers the "
                          "motion tokenizer (the paper's encoder) only")
    d = config.dit
    if _existing(d.path):
        dit_cfg, latent_channels = dit_sizes(d)
    else:
        if d.path:
            notes.append(f"dit.path '{d.path}' is not here: DiT sizes from the config's dit fields")
        dit_cfg = dit_config(d)
        latent_channels = dit_cfg.in_dim
    spec = DiTSpec(dim=dit_cfg.dim, heads=dit_cfg.num_heads, depth=dit_cfg.num_layers,
                   latent_channels=latent_channels)
    try:
        tok_cfg = MotionTokenizerConfig(**config.tokenizer.config)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"config field 'tokenizer.config' does not describe a motion tokenizer: {e}") from e
    retarget, expression = _module_sizes(config, notes)
    try:
        rt_cfg = RetargetConfig(**{**retarget, "motion_dim": tok_cfg.token_size,
                                   "motion_tokens": tok_cfg.num_latent_tokens, "latent_channels": latent_channels,
                                   "patch_size": dit_cfg.patch_size[-1], "heatmap_joints": NUM_JOINTS})
        ex_cfg = ExpressionConfig(**expression)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"config fields 'modules.retarget' / 'modules.expression': {e}") from e
    with torch.device("meta"):
        dit = WanDiT(dit_cfg, init=False)
        tokenizer = MotionTokenizer(tok_cfg)
        modules = IMAnimationModules(rt_cfg, ex_cfg, spec)

    def block(blocks) -> int:
        return max((sum(p.numel() for p in b.parameters()) for b in blocks), default=0)

    expression_parts = nn.ModuleList([modules.expression_encoder, modules.expression_blocks, modules.motion_patch])
    parts = [
        Part("dit", dit, d.trainable, block(dit.blocks)),
        Part("tokenizer", tokenizer, config.tokenizer.trainable, block(tokenizer.encoder.transformer)),
        Part("retarget", modules.retarget, config.retarget_trainable, block(modules.retarget.blocks)),
        Part("expression+motion_patch", expression_parts, True, block(modules.expression_blocks)),
    ]
    return parts, spec


def _vae_params(config: Stage3Config, latent_channels: int, notes: list[str]) -> int:
    if config.data.cache:
        return 0  # the clip cache holds the latents: no VAE in the training step
    if latent_channels == 48:
        from ..wan.vae22 import Wan22VAE

        with torch.device("meta"):
            return sum(p.numel() for p in Wan22VAE().parameters())
    notes.append(f"the frozen VAE of {latent_channels}-channel latents is not counted (its width is in its file)")
    return 0


# ---- the plan --------------------------------------------------------------------------------------------------
def memory_plan(config: Stage3Config, options: PlanOptions) -> MemoryPlan:
    notes: list[str] = []
    parts, spec = build_parts(config, notes)
    by_name = {p.name: p for p in parts}
    dit = by_name["dit"].module.config
    ratio = SPATIAL_RATIO.get(spec.latent_channels)
    if ratio is None:
        raise ConfigError(f"the DiT takes {spec.latent_channels}-channel latents; the plan knows the Wan2.2 (48) and "
                          f"Wan2.1 (16) VAEs only")
    pt, ph, pw = dit.patch_size
    if options.height % (ratio * ph) or options.width % (ratio * pw):
        raise ConfigError(f"--height {options.height} / --width {options.width} must be multiples of {ratio * ph} "
                          f"(VAE x{ratio}, DiT patch {ph}x{pw})")
    latent = (1 + (options.frames - 1) // TEMPORAL_RATIO, options.height // ratio, options.width // ratio)
    per_frame = (latent[1] // ph) * (latent[2] // pw)
    n = (1 + latent[0]) // pt * per_frame  # the identity latent frame goes first
    b, draws = config.batch_size, config.dit_draws
    bd = b * draws
    plan = MemoryPlan(options, parts, latent, n, b, draws, notes)
    plan.vae_params = _vae_params(config, spec.latent_channels, notes)

    # DiT and expression blocks
    text = config.text_len
    blocks = dit.num_layers * act.wan_block(n * bd, dit.dim, dit.ffn_dim, dit.num_heads, text * bd)
    ckpt = dit.num_layers * act.checkpointed_input(n * bd, dit.dim) + act.wan_block(
        n * bd, dit.dim, dit.ffn_dim, dit.num_heads, text * bd)
    outer = act.dit_outer(n * bd, dit.dim, dit.head_dim)
    ex = by_name["expression+motion_patch"].module[0].config  # the expression encoder's sizes
    count = len(spec.expression_block_indices)
    expression = count * act.expression_block(n * bd, latent[0] * per_frame * bd, dit.dim, dit.num_heads,
                                              latent[0] * bd, ex.tokens, ex.width)
    plan.activations = {"dit_blocks": blocks, "dit_outer": outer, "expression_blocks": expression}
    plan.activations_checkpointed = {"dit_blocks": ckpt, "dit_outer": outer, "expression_blocks": expression}
    driven = latent[0] * per_frame
    # expression blocks: q and output projections of the driven tokens, attention to K expression tokens
    expression_flops = count * (4 * driven * dit.dim**2 + 4 * driven * ex.tokens * dit.dim)
    dit_flops = bd * (dit.num_layers * act.wan_block_flops(n, dit.dim, dit.ffn_dim, text) + expression_flops)
    flops = (3 + 1) * dit_flops

    # retargeter: motion tokens of every driving frame, the identity's patches, a mask token per patch and frame
    rt = by_name["retarget"]
    rc = rt.module.config
    rt_tokens = options.frames * rc.motion_tokens + per_frame + latent[0] * per_frame
    rt_flops = b * rc.depth * act.preln_block_flops(rt_tokens, rc.width, 4 * rc.width)
    flops += (3 if rt.trainable else 1) * rt_flops
    if rt.trainable:
        saved = rc.depth * act.preln_block(b * rt_tokens, rc.width, 4 * rc.width, rc.heads)
        plan.activations["retarget"] = plan.activations_checkpointed["retarget"] = saved

    # motion tokenizer: every driving frame, its patches + class token + latent tokens
    tok = by_name["tokenizer"]
    tc = tok.module.config
    tok_tokens = 1 + tc.num_patches + tc.num_latent_tokens
    tok_flops = b * options.frames * tc.layers * act.preln_block_flops(tok_tokens, tc.width, tc.mlp_ratio * tc.width)
    flops += (3 if tok.trainable else 1) * tok_flops
    if tok.trainable:
        saved = tc.layers * act.preln_block(b * options.frames * tok_tokens, tc.width, tc.mlp_ratio * tc.width,
                                            tc.heads)
        plan.activations["tokenizer"] = plan.activations_checkpointed["tokenizer"] = saved
    plan.flops = flops
    return plan


# ---- report ----------------------------------------------------------------------------------------------------
def _gib(x: float) -> str:
    return f"{x / GIB:8.2f}"


def format_plan(plan: MemoryPlan, config_path: str = "") -> str:
    o = plan.options
    lines = [
        f"Stage 3 memory plan{f' for {config_path}' if config_path else ''}: {o.gpus} GPU(s) of "
        f"{o.gpu_memory_gib:g} GiB",
        f"clip: {o.frames} frames of {o.height}x{o.width} -> latent {plan.latent[0]} x {plan.latent[1]} x "
        f"{plan.latent[2]} (+1 identity frame): {plan.dit_tokens} DiT tokens per sample; batch {plan.batch} per "
        f"rank x {plan.draws} noise draw(s)",
        "parameters (models built on the meta device):",
    ]
    for p in plan.parts:
        lines.append(f"  {p.name:26s} {p.params:>15,d}  {'trained' if p.trainable else 'frozen'}")
    lines.append(f"  {'trained / frozen':26s} {plan.trainable_params:>15,d} / {plan.frozen_params:,d}")
    if plan.vae_params:
        lines.append(f"  {'frozen VAE (unsharded)':26s} {plan.vae_params:>15,d}")
    static = plan.static_bytes()
    labels = {"parameters": "parameters (fp32 master + frozen bf16, sharded)", "gradients": "gradients (fp32, sharded)",
              "optimizer": "optimizer (AdamW moments, fp32, sharded)",
              "fsdp_buffers": "FSDP buffers (2 gathered blocks bf16, 1 block's grads)", "vae": "frozen VAE (bf16)"}
    lines.append(f"per rank, GiB{'':44s}no checkpointing  per-block checkpointing")
    for key, label in labels.items():
        lines.append(f"  {label:55s} {_gib(static[key])}  {_gib(static[key])}")
    for key in plan.activations:
        lines.append(f"  {'activations: ' + key:55s} {_gib(plan.activations[key].bytes)}  "
                     f"{_gib(plan.activations_checkpointed[key].bytes)}")
    lines.append(f"  {'total':55s} {_gib(plan.total_bytes(False))}  {_gib(plan.total_bytes(True))}")
    budget = f"{plan.budget_bytes / GIB:.1f} GiB ({o.gpu_memory_gib:g} GiB less {o.reserve:.0%} reserve)"
    lines.append(f"  fits in {budget}: {'yes' if plan.fits(False) else 'NO':3s} without checkpointing, "
                 f"{'yes' if plan.fits(True) else 'NO'} with per-block checkpointing")
    lines.append(f"time (estimate, not a measurement): {plan.flops / 1e15:.2f} PFLOP per rank and step (matmuls, "
                 f"checkpointed) -> {plan.hours_per_1k_steps():.2f} h per 1k steps at {o.peak_tflops:g} TFLOPS x "
                 f"{o.utilization:.0%} utilisation")
    lines += [f"note: {n}" for n in plan.notes]
    return "\n".join(lines)


def plan_json(plan: MemoryPlan) -> str:
    return json.dumps(plan.to_dict(), indent=1)
