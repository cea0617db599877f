"""Training configurations: dataclasses read from / written to JSON, defaults = the paper's settings.

Paper (section 4.1 and supplementary "Implementation Details"): AdamW; Stage 1 5k steps and Stage 2 10k
steps at lr 1e-4; Stage 3 30k steps, DiT lr 1e-5 and the other modules 5e-5; 81-frame clips;
L_total = L_DiT + 10 * L_retarget. Every size is a field, so a tiny CPU run is only a config away.

A JSON config names only the fields it changes; unknown fields are an error naming them (a typo must not
silently fall back to a default). ``diff_configs`` lists the fields two configs disagree on, which resuming
uses to refuse a checkpoint of another configuration.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import IMAnimationError

STAGES = ("stage1", "stage2", "stage3")
MOTION_ENCODERS = ("tokenizer", "conv")
RETARGET_KINDS = ("mask_tokens", "self_attention")
PRECISIONS = ("no", "bf16")
STRATEGIES = ("ddp", "fsdp")
OPTIM_IMPLEMENTATIONS = ("default", "foreach", "fused")
DTYPES = ("float32", "float16", "bfloat16")
# Fields that may change between a checkpoint and the run resuming it (they do not change the result of a
# step): the step budget, logging / checkpoint cadence, where outputs go, loader workers, the device.
RESUMABLE_CHANGES = frozenset({
    "steps", "output_dir", "log_every", "save_every", "keep_checkpoints", "progress", "data.num_workers", "data.cache",
    "device", "cpu_threads", "compile", "optim.implementation",
})


class ConfigError(IMAnimationError):
    """A training configuration that cannot be used; the message names the field and what to do."""


@dataclass(kw_only=True)
class OptimConfig:
    """AdamW. lr: learning rate of every trained module (Stage 3: of the modules other than the DiT).
    warmup_steps: linear warm-up from 0 (0 = constant lr, as the paper states no schedule).
    decay_steps: linear decay to 0 over the run's last decay_steps steps (0 = none, the paper's constant lr);
        it ends at the run's ``steps``, so a resume that changes ``steps`` moves it.
    grad_clip: max global gradient norm (0 = off; not stated by the paper, 1.0 is the usual DiT value).
    implementation: torch's AdamW kernels: "default" (torch's choice: a loop over the tensors on CPU),
        "foreach" (one kernel per op over all tensors) or "fused" (one kernel per step; the same update up to
        float rounding, far fewer small kernels on a CPU). The optimiser state is the same for all three, so a
        run may resume with another."""

    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.01
    warmup_steps: int = 0
    decay_steps: int = 0
    grad_clip: float = 1.0
    implementation: str = "default"


@dataclass(kw_only=True)
class DataConfig:
    """Where training clips come from.

    kind: "synthetic" (im_animation_core.data.SyntheticPairs: procedural characters with exact
        cross-identity ground truth) or "video_folder" (im_animation_core.data.VideoFolder: real clips +
        DWPose keypoint JSON under ``root``; unreadable clips are skipped with a count).
    frames: clip length, 4k+1 (81 in the paper). size: frame side in pixels, or [height, width] (e.g. the
        paper's 704 x 1280); clips of another size are resized (video_folder: fitted, see its ``fit``).
    same_identity: synthetic pairs whose identity is the driver's (self-reenactment) instead of another.
    augment: apply data.augment_pair to the identity / target side (colour, random crop / scale / padding;
        on by default in Stage 2 only, as in the paper); augment_options: data.AugmentConfig fields.
    num_workers: DataLoader worker processes. options: further keyword arguments for the dataset class
        (e.g. VideoFolder's stride, fit).
    cache: a clip cache folder (train.cache; Stages 2 and 3): when set, the stage trains from the clips cached
        there (built by ``python -m im_animation_core.train cache --config`` the same config) instead of
        rendering / decoding and encoding each clip at every step. The same losses, a much shorter step.
    """

    kind: str = "synthetic"
    split: str = "train"
    num_samples: int = 10000
    frames: int = 81
    size: int | tuple[int, int] = 256
    seed: int = 0
    same_identity: bool = False
    root: str = ""
    augment: bool = False
    augment_options: dict = field(default_factory=dict)
    num_workers: int = 0
    options: dict = field(default_factory=dict)
    cache: str = ""


@dataclass(kw_only=True)
class TokenizerInit:
    """The motion tokenizer (released schema).

    path: a tokenizer file (released motion_encoder_latest.safetensors, or a stage output); else
    titok_path: the TiTok-L-32 pickle to initialise from (paper Stage 1; codebook_size 0 keeps TiTok's
        codebook, another value draws a fresh one); else a fresh tokenizer of ``config``
        (MotionTokenizerConfig fields, e.g. {"width": 64, "layers": 2, "heads": 1, "image_size": 64}).
    trainable: fine-tune it in this stage (paper: Stages 1-3). Frozen, its tokens come without gradient.
    commitment_cost: VQ commitment weight (0.25, the released config); vq_weight: weight of the VQ loss
        (codebook + commitment) in the stage loss while the tokenizer trains.
    quantize_warmup_steps: training steps during which the heads see the continuous (l2-normalised) encoder
        latents instead of codebook rows; at the switch the codebook is re-drawn from recent latents. Not in
        the paper, whose Stage 1 starts from a trained TiTok codebook: from scratch, the latent tokens start
        out almost identical for every image, all snap to the same few codes, and no motion information
        reaches the head (observed: Stage 1 stuck at the predict-the-mean heatmap loss, VQ loss ~1e-6).
    init: how a fresh tokenizer (no path / titok_path) starts: "titok" (TiTok's random init) or "local"
        (train.tokenizer_init: the first block's latent tokens attend to their own patch neighbourhood, for
        training from scratch without a pretrained TiTok).
    save_dtype: dtype of the exported tokenizer (float16 as released).
    """

    path: str = ""
    titok_path: str = ""
    codebook_size: int = 0
    config: dict = field(default_factory=dict)
    trainable: bool = True
    commitment_cost: float = 0.25
    quantize_warmup_steps: int = 0
    init: str = "titok"
    vq_weight: float = 1.0
    save_dtype: str = "float16"


@dataclass(kw_only=True)
class ConvEncoderInit:
    """The conv motion encoder of the ablation (``motion_encoder: "conv"``): frames -> [32,12] tokens
    without VQ. path: a conv encoder file (a stage output); else fresh with these sizes."""

    path: str = ""
    image_size: int = 256
    channels: tuple[int, ...] = (32, 64, 128, 256)
    trainable: bool = True


@dataclass(kw_only=True)
class HeatmapHeadInit:
    """Stage-1 heatmap head (stage1.HeatmapHead). token sizes and J come from the encoder / joint layout.
    path: a heatmap head file to continue from; else fresh with these sizes (64x64 maps by default)."""

    path: str = ""
    width: int = 256
    depth: int = 4
    mlp_ratio: float = 4.0
    seed_size: int = 4
    channels: tuple[int, ...] = (128, 64, 32, 16, 8)


@dataclass(kw_only=True)
class ModulesInit:
    """IMAnimationModules (retarget transformer + expression encoder/blocks + motion patch).

    path: a modules file (Stage 2 output) to continue from; else fresh with these sizes. The motion token
    sizes, latent channels and patch size come from the encoder and the DiT.
    retarget: RetargetConfig sizes (width, depth, heads, out_channels, heatmap_channels, heatmap_upsample) and
    heatmap_head ("upsample" or "pixel_shuffle");
    expression: ExpressionConfig sizes (crop_size, width, tokens, base_channels).
    retarget_init: fresh retarget weights: "default" (random), or "local" (retarget_init.py: the first block's
        mask tokens read their own latent frame's motion tokens and their own patch of the identity latent,
        fitted on the first 16 training pairs; small patch grids only). Ignored when path is set.
    """

    path: str = ""
    retarget: dict = field(default_factory=dict)
    expression: dict = field(default_factory=dict)
    retarget_init: str = "default"


@dataclass(kw_only=True)
class DiTInit:
    """The Wan DiT. path: a Wan .safetensors (e.g. wan2.2_ti2v_5B_fp16, or a stage output); else a fresh
    DiT of these sizes (defaults: Wan2.2 TI2V-5B). num_heads 0 = dim // 128 (what ComfyUI assumes).
    dtype: the DiT's parameter dtype while training; export: "base" (Wan keys, patch embedding as the
    base model's: the node pack adds the motion channels at run time) or "widened" (latent + C_r input
    channels, for using the DiT without the pack's patch); save_dtype: dtype of the exported file.
    width_factor: widen the DiT in ``path`` and the modules' DiT-side weights this many times (width, heads and
    FFN; ``train.dit_widen``: the same outputs, more capacity) before training; 1 = as stored."""

    path: str = ""
    dim: int = 3072
    ffn_dim: int = 14336
    num_heads: int = 0
    num_layers: int = 30
    in_dim: int = 48
    out_dim: int = 48
    text_dim: int = 4096
    trainable: bool = True
    gradient_checkpointing: bool = False
    dtype: str = "float32"
    export: str = "base"
    save_dtype: str = "float32"
    width_factor: int = 1


@dataclass(kw_only=True)
class VAEInit:
    """The frozen video VAE. path: a Wan VAE .safetensors (im_animation_core.wan.vae.WanVAE).
    factory: "module:callable" returning an object with ``encode(video [B,3,T,H,W] in [-1,1]) -> mu``,
    called with ``path`` (to plug in another VAE implementation, e.g. a Wan2.2 VAE)."""

    path: str = ""
    factory: str = ""


@dataclass(kw_only=True)
class CommonConfig:
    """Fields every stage has.

    batch_size: clips per process and step. device: "auto" (the local CUDA device, else CPU), "cpu",
    "cuda". cpu_threads: torch intra-op threads (0 = torch's default; 1 is much faster for tiny models on a
    busy machine). mixed_precision: "no" or "bf16": autocast to bfloat16 on CUDA, and on a CPU with bfloat16
    matrix units (AVX512-BF16 or AMX; another CPU trains in float32, saying so in one log line); the weights,
    AdamW and the losses stay float32. compile: torch.compile the stage's heavy modules (Stage.compile_targets:
    Stage 3's DiT and retargeter), the same weights and losses up to float rounding; a machine where compiling
    fails trains eager, saying why in one log line. keep_checkpoints: how many resumable
    checkpoints to keep. heatmap_sigma: Gaussian std of the target heatmaps in heatmap pixels.
    heatmap_visibility_weight: weight each joint's heatmap error by its visibility (off: eq. 5 / 6
    as written; invisible joints then have all-zero targets). heatmap_supervision: the ablation switch
    (Table 2 exp. D); off drops every heatmap loss of the stage.
    strategy: how processes launched by torchrun share the work: "ddp" (DistributedDataParallel, every
    process holds the whole model; checkpoints are one model.safetensors) or "fsdp" (FSDP2, train/fsdp.py:
    parameters, gradients and optimiser state sharded per DiT block, float32 master weights, bf16 compute
    with mixed_precision "bf16" on CUDA; checkpoints sharded with torch.distributed.checkpoint, resumable on
    another number of processes). One process without torchrun shards nothing but keeps fsdp's checkpoints.
    """

    output_dir: str = "runs/train"
    seed: int = 0
    steps: int = 1000
    batch_size: int = 1
    log_every: int = 10
    save_every: int = 500
    keep_checkpoints: int = 2
    progress: bool = True
    device: str = "auto"
    cpu_threads: int = 0
    mixed_precision: str = "no"
    compile: bool = False
    strategy: str = "ddp"
    optim: OptimConfig = field(default_factory=OptimConfig)
    data: DataConfig = field(default_factory=DataConfig)
    motion_encoder: str = "tokenizer"
    tokenizer: TokenizerInit = field(default_factory=TokenizerInit)
    conv_encoder: ConvEncoderInit = field(default_factory=ConvEncoderInit)
    heatmap_sigma: float = 2.0
    heatmap_visibility_weight: bool = False
    heatmap_supervision: bool = True


@dataclass(kw_only=True)
class Stage1Config(CommonConfig):
    """Stage 1: motion tokenizer + heatmap head on driving frames (heatmap MSE, eq. 5, + VQ loss).

    teacher: optional path of a conv motion encoder file (a ``motion_encoder: "conv"`` Stage-1 output,
    ``conv_motion_encoder.safetensors``); its tokens become a second target, loss += teacher_weight *
    MSE(student tokens, teacher tokens), for teacher_steps steps (0 = all). Not in the paper, whose Stage 1
    starts from a trained TiTok: from scratch, a ViT tokenizer sits for a long time at the predict-the-mean
    heatmap loss (dense token targets from an encoder that already knows where the joints are move it
    off that plateau; the heatmap loss alone then takes over).
    """

    output_dir: str = "runs/stage1"
    steps: int = 5000
    data: DataConfig = field(default_factory=lambda: DataConfig(same_identity=True))  # only the driving clip is used
    heatmap_head: HeatmapHeadInit = field(default_factory=HeatmapHeadInit)
    teacher: str = ""
    teacher_weight: float = 1.0
    teacher_steps: int = 0


@dataclass(kw_only=True)
class Stage2Config(CommonConfig):
    """Stage 2: tokenizer + retargeting transformer on cross-identity pairs (L_retarget, eq. 6).

    dit: only its sizes are used here (the modules file records the DiT it is made for). retarget: the
    ablation switch (Table 6): "mask_tokens" (the paper's module) or "self_attention" (no mask tokens:
    the reference tokens, one copy per latent frame, are the queries)."""

    output_dir: str = "runs/stage2"
    steps: int = 10000
    data: DataConfig = field(default_factory=lambda: DataConfig(augment=True))
    retarget: str = "mask_tokens"
    modules: ModulesInit = field(default_factory=ModulesInit)
    dit: DiTInit = field(default_factory=DiTInit)
    vae: VAEInit = field(default_factory=VAEInit)


@dataclass(kw_only=True)
class Stage3Config(Stage2Config):
    """Stage 3: DiT + modules end to end: flow matching (ComfyUI's convention) + retarget_weight * L_retarget.

    optim.lr: the modules other than the DiT (5e-5); dit_lr: the DiT (1e-5); motion_lr: the motion channels'
        patch embedding (the modules' motion_patch), 0 = optim.lr. The motion maps enter the DiT through that
        one zero-initialised convolution, whose weights stay small at the modules' rate (docs/training.md).
    shift: the flow shift of the sigma sampling, sigma' = shift*s / (1 + (shift-1)*s) with s ~ U(0,1);
        0 = per model: 5.0 for 48-channel (Wan2.2 TI2V, its official shift) and 8.0 for 16-channel
        (Wan2.1 family, ComfyUI's default for it and the shift of this pack's workflows).
    text_len: length of the empty (all-zero) text context used when a sample has no text embedding.
    expression_face_boxes: "data" (the dataset's face boxes) or "fallback" (the box Expression Encode uses
        without keypoints).
    moving_weight: extra L_DiT weight where the target differs from the identity frame (targets.moving_weights):
        0 = the paper's plain L_DiT. Not in the paper; the demo needs it (docs/training.md).
    dit_draws: (sigma, noise) draws per clip in L_DiT, averaged. The motion encoder, retargeter and VAE run once
        per clip and cost most of a step on small DiTs, so further draws give the DiT a larger batch for little
        time. 1 = the usual one draw. Not in the paper.
    reference: how the DiT sees the reference (identity) latent frame: "clean" with timestep 0 (Wan2.2 TI2V,
        the paper's model; 48-channel models always), "noised" at the current sigma (KSampler's inpainting on a
        Wan2.1-family model), or "auto": what the modules file in modules.path was trained with, else clean for
        48-channel latents and noised for 16. Written to the exported modules file, so that the sampler node
        gives the DiT what it was trained on.
    retarget_trainable: false freezes the retargeting transformer (and drops L_retarget, which then has nothing
        to train): a DiT-first phase on a Stage-2 retargeter, whose motion maps a clip cache can then hold, so
        that the step is almost all DiT. Not in the paper, which trains everything in Stage 3.
    """

    output_dir: str = "runs/stage3"
    steps: int = 30000
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=5e-5))
    data: DataConfig = field(default_factory=DataConfig)
    dit_lr: float = 1e-5
    motion_lr: float = 0.0
    retarget_weight: float = 10.0
    shift: float = 0.0
    text_len: int = 512
    expression_face_boxes: str = "data"
    moving_weight: float = 0.0
    dit_draws: int = 1
    reference: str = "auto"
    retarget_trainable: bool = True


CONFIG_CLASSES: dict[str, type[CommonConfig]] = {
    "stage1": Stage1Config, "stage2": Stage2Config, "stage3": Stage3Config,
}


# ---- dict <-> dataclass ---------------------------------------------------------------------------------
def _convert(value: Any, hint: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise ConfigError(f"config field '{where}' must be an object, got {value!r}")
        return _from_dict(hint, value, where + ".")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config field '{where}' must be a list, got {value!r}")
        args = typing.get_args(hint)
        item = args[0] if args else Any
        return tuple(_convert(v, item, where) for v in value)
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config field '{where}' must be a number, got {value!r}")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, float)
                                                                     and value.is_integer())):
            raise ConfigError(f"config field '{where}' must be an integer, got {value!r}")
        return int(value)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"config field '{where}' must be true or false, got {value!r}")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"config field '{where}' must be a string, got {value!r}")
        return value
    if hint is dict or origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"config field '{where}' must be an object, got {value!r}")
        return dict(value)
    if isinstance(hint, types.UnionType):
        return value
    return value


def _from_dict(cls: type, data: dict, prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        listed = ", ".join(f"'{prefix}{k}'" for k in unknown)
        raise ConfigError(f"unknown config field(s) {listed} for {cls.__name__}; known fields: "
                          f"{', '.join(sorted(names))}")
    kwargs = {k: _convert(v, hints[k], prefix + k) for k, v in data.items()}
    return cls(**kwargs)


def config_from_dict(stage: str, data: dict) -> CommonConfig:
    """Build and validate the config of ``stage`` from a JSON-like dict (only changed fields needed)."""
    if stage not in CONFIG_CLASSES:
        raise ConfigError(f"unknown stage '{stage}'; choose one of {', '.join(STAGES)}")
    data = dict(data)
    named = data.pop("stage", None)
    if named is not None and str(named) not in (stage, stage[-1]):
        raise ConfigError(f"the config file is for stage '{named}' but '{stage}' was asked for")
    config = _from_dict(CONFIG_CLASSES[stage], data)
    validate(stage, config)
    return config


def read_json_file(path: str | Path, what: str) -> Any:
    """The JSON in the ``what`` file ("config", "recipe") at path; unreadable or invalid JSON is a ConfigError
    naming the file."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError(f"cannot read {what} file '{path}': {e}") from e
    except json.JSONDecodeError as e:
        raise ConfigError(f"{what} file '{path}' is not valid JSON: {e}") from e


def load_config(stage: str, path: str | Path) -> CommonConfig:
    path = Path(path)
    data = read_json_file(path, "config")
    if not isinstance(data, dict):
        raise ConfigError(f"config file '{path}' must hold a JSON object")
    return config_from_dict(stage, data)


def config_to_dict(config: Any) -> dict:
    """JSON-ready dict (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


def flatten(data: dict, prefix: str = "") -> dict[str, Any]:
    """Nested dicts -> {"a.b.c": value}; an empty dict contributes no key."""
    out: dict[str, Any] = {}
    for k, v in data.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def diff_configs(saved: dict, current: dict, ignore: frozenset[str] = RESUMABLE_CHANGES) -> list[str]:
    """'field (checkpoint X, now Y)' for every field that differs, except those in ``ignore``."""
    a, b = flatten(saved), flatten(current)
    out = []
    for key in sorted(set(a) | set(b)):
        if key in ignore:
            continue
        missing = object()
        va, vb = a.get(key, missing), b.get(key, missing)
        if va != vb:
            show_a = "absent" if va is missing else json.dumps(va)
            show_b = "absent" if vb is missing else json.dumps(vb)
            out.append(f"{key} (checkpoint {show_a}, now {show_b})")
    return out


# ---- validation -----------------------------------------------------------------------------------------
def _choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"config field '{name}' is '{value}'; choose one of {', '.join(choices)}")


def _frame_size(size: Any) -> int | tuple[int, int]:
    """data.size as a positive int or a (height, width) tuple of positive ints (JSON gives a list)."""
    sides = list(size) if isinstance(size, (list, tuple)) else [size]
    if len(sides) not in (1, 2) or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in sides):
        raise ConfigError(f"config field 'data.size' must be a frame side or [height, width] in pixels (positive "
                          f"integers), got {size!r}")
    return sides[0] if not isinstance(size, (list, tuple)) else (sides[0], sides[-1])


def validate(stage: str, c: CommonConfig) -> None:
    """Raise ConfigError for values no run can use."""
    for name in ("steps", "batch_size", "log_every", "save_every", "keep_checkpoints"):
        if getattr(c, name) < 1:
            raise ConfigError(f"config field '{name}' must be at least 1, got {getattr(c, name)}")
    if c.data.frames < 1 or c.data.frames % 4 != 1:
        raise ConfigError(f"config field 'data.frames' is {c.data.frames}; Wan clips have 4k+1 frames (e.g. 81, "
                          f"17, 5)")
    if c.data.num_workers < 0:
        raise ConfigError("config field 'data.num_workers' must be >= 0")
    c.data.size = _frame_size(c.data.size)
    _choice("data.kind", c.data.kind, ("synthetic", "video_folder"))
    _choice("motion_encoder", c.motion_encoder, MOTION_ENCODERS)
    _choice("tokenizer.init", c.tokenizer.init, ("titok", "local"))
    _choice("mixed_precision", c.mixed_precision, PRECISIONS)
    _choice("strategy", c.strategy, STRATEGIES)
    _choice("optim.implementation", c.optim.implementation, OPTIM_IMPLEMENTATIONS)
    _choice("tokenizer.save_dtype", c.tokenizer.save_dtype, DTYPES)
    _choice("device", c.device.split(":")[0], ("auto", "cpu", "cuda"))
    if c.optim.lr <= 0 or c.optim.warmup_steps < 0 or c.optim.decay_steps < 0 or c.optim.grad_clip < 0:
        raise ConfigError("config fields 'optim.lr' > 0, 'optim.warmup_steps' >= 0, 'optim.decay_steps' >= 0 and "
                          "'optim.grad_clip' >= 0 are required")
    if c.heatmap_sigma <= 0:
        raise ConfigError("config field 'heatmap_sigma' must be > 0")
    if stage in ("stage1", "stage2") and not c.heatmap_supervision:
        raise ConfigError(f"heatmap_supervision is false, but the heatmap loss is the only loss of {stage}: "
                          f"nothing would be trained. For the 'without heatmap supervision' ablation run stage3 "
                          f"with heatmap_supervision false (it drops the L_retarget term), starting from the "
                          f"stage-1/2 outputs or from fresh modules.")
    if isinstance(c, Stage2Config):
        _choice("retarget", c.retarget, RETARGET_KINDS)
        _choice("modules.retarget_init", c.modules.retarget_init, ("default", "local"))
        _choice("dit.export", c.dit.export, ("base", "widened"))
        _choice("dit.dtype", c.dit.dtype, DTYPES)
        _choice("dit.save_dtype", c.dit.save_dtype, DTYPES)
        if c.dit.width_factor < 1 or (c.dit.width_factor > 1 and not c.dit.path):
            raise ConfigError(f"config field 'dit.width_factor' is {c.dit.width_factor}: it widens the trained DiT in "
                              f"dit.path, so it needs dit.path and must be >= 1 (a fresh DiT: set dit.dim instead)")
        if c.strategy == "fsdp" and c.dit.dtype != "float32":
            raise ConfigError(f"strategy 'fsdp' keeps float32 master weights, but dit.dtype is '{c.dit.dtype}': set "
                              f"it to float32 (mixed_precision 'bf16' computes in bfloat16)")
    if isinstance(c, Stage3Config):
        if c.motion_lr < 0:
            raise ConfigError(f"config field 'motion_lr' is {c.motion_lr}; it must be >= 0 (0 = optim.lr)")
        if c.dit_lr <= 0 or c.shift < 0 or c.retarget_weight < 0 or c.text_len < 1:
            raise ConfigError("config fields 'dit_lr' > 0, 'shift' >= 0, 'retarget_weight' >= 0 and "
                              "'text_len' >= 1 are required")
        _choice("expression_face_boxes", c.expression_face_boxes, ("data", "fallback"))
        if c.moving_weight < 0:
            raise ConfigError(f"config field 'moving_weight' is {c.moving_weight}; it must be >= 0 (0 = plain L_DiT)")
        if c.dit_draws < 1:
            raise ConfigError(f"config field 'dit_draws' is {c.dit_draws}; it must be >= 1 (noise draws per clip)")
        _choice("reference", c.reference, ("auto", "clean", "noised"))
