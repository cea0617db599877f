"""Building the models, the frozen VAE and the dataset of a stage from its config."""

from __future__ import annotations

import importlib
import logging
from types import SimpleNamespace
from typing import Any

import torch
from torch import nn

from ..checkpoints import header
from ..errors import CheckpointError, IMAnimationError
from ..expression import ExpressionConfig
from ..heatmap_head import HeatmapHead, HeatmapHeadConfig, JointDecoderConfig, MotionDecoderConfig
from ..keypoints import NUM_JOINTS
from ..modules import DiTSpec, IMAnimationModules
from ..retarget import RetargetConfig
from ..tokenizer import MotionTokenizer, MotionTokenizerConfig
from ..wan import WanDiT, WanDiTConfig, file_metadata, load_wan_dit
from .config import CommonConfig, ConfigError, DataConfig, DiTInit, Stage1Config, Stage2Config, VAEInit
from .dit_widen import WIDEN_SEED, widen_modules, widen_wan_dit, widened_config
from .encoders import ConvEncoderConfig, ConvMotionEncoder, TokenizerEncoder
from .modules_file import load_modules, retarget_kind, use_retarget_kind
from .titok import tokenizer_from_titok
from .tokenizer_init import tokenizer_local_attention_init_

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


# ---- motion encoder -------------------------------------------------------------------------------------
def build_tokenizer(config: CommonConfig) -> MotionTokenizer:
    t = config.tokenizer
    if t.path:
        return MotionTokenizer.from_file(t.path, dtype=torch.float32)
    if t.titok_path:
        return tokenizer_from_titok(t.titok_path, codebook_size=t.codebook_size or None, dtype=torch.float32)
    try:
        tokenizer = MotionTokenizer(MotionTokenizerConfig(**t.config))
    except (TypeError, ValueError) as e:
        raise ConfigError(f"config field 'tokenizer.config' does not describe a motion tokenizer: {e}") from e
    if t.init == "local":
        try:
            tokenizer_local_attention_init_(tokenizer)
        except ValueError as e:
            raise ConfigError(f"tokenizer.init 'local': {e}") from e
    return tokenizer


def build_encoder(config: CommonConfig) -> tuple[nn.Module, bool]:
    """(encoder, trainable): TokenizerEncoder or ConvMotionEncoder; fresh weights follow torch's RNG."""
    if config.motion_encoder == "conv":
        c = config.conv_encoder
        if c.path:
            return ConvMotionEncoder.from_file(c.path), c.trainable
        return ConvMotionEncoder(ConvEncoderConfig(image_size=c.image_size, channels=c.channels)), c.trainable
    tokenizer = build_tokenizer(config)
    return (TokenizerEncoder(tokenizer, config.tokenizer.commitment_cost, config.tokenizer.quantize_warmup_steps),
            config.tokenizer.trainable)


def build_teacher(config: Stage1Config) -> ConvMotionEncoder | None:
    """The frozen conv motion encoder whose tokens Stage 1 may also regress (config.teacher), or None."""
    if not config.teacher:
        return None
    try:
        return ConvMotionEncoder.from_file(config.teacher)
    except (OSError, CheckpointError) as e:
        raise ConfigError(f"config field 'teacher' ({config.teacher}) is not a conv motion encoder file: {e}") from e


def build_heatmap_head(config: Stage1Config, encoder: nn.Module) -> HeatmapHead:
    h = config.heatmap_head
    if h.path:
        head = HeatmapHead.from_file(h.path).train()
        m = head.config.motion
        if (m.num_tokens, m.token_dim) != (encoder.num_tokens, encoder.token_dim):
            raise ConfigError(f"heatmap_head.path '{h.path}' decodes [{m.num_tokens},{m.token_dim}] tokens but the "
                              f"motion encoder makes [{encoder.num_tokens},{encoder.token_dim}]")
        return head
    try:
        cfg = HeatmapHeadConfig(
            motion=MotionDecoderConfig(token_dim=encoder.token_dim, num_tokens=encoder.num_tokens,
                                       num_joints=NUM_JOINTS, width=h.width, depth=h.depth, mlp_ratio=h.mlp_ratio),
            joint=JointDecoderConfig(width=h.width, seed_size=h.seed_size, channels=h.channels))
    except ValueError as e:
        raise ConfigError(f"config field 'heatmap_head': {e}") from e
    return HeatmapHead(cfg)


# ---- DiT --------------------------------------------------------------------------------------------------
def dit_config(d: DiTInit) -> WanDiTConfig:
    try:
        return WanDiTConfig(dim=d.dim, ffn_dim=d.ffn_dim, num_heads=d.num_heads or None, num_layers=d.num_layers,
                            in_dim=d.in_dim, out_dim=d.out_dim, text_dim=d.text_dim)
    except ValueError as e:
        raise ConfigError(f"config field 'dit': {e}") from e


def _file_shapes(path: str) -> dict[str, SimpleNamespace]:
    return {k: SimpleNamespace(shape=shape) for k, shape in header(path, "Wan DiT")[1].items()}


def dit_sizes(d: DiTInit) -> tuple[WanDiTConfig, int]:
    """(config, latent channels) of the DiT a stage works with, from its file's shapes or the config."""
    if not d.path:
        cfg = dit_config(d)
        return cfg, cfg.in_dim
    cfg = WanDiTConfig.from_state_dict(_file_shapes(d.path))
    if d.width_factor > 1:  # as build_dit widens it
        cfg = widened_config(cfg, d.width_factor)
    latent = int(file_metadata(d.path).get("latent_channels") or cfg.in_dim)
    return cfg, latent


def dit_spec(d: DiTInit) -> DiTSpec:
    cfg, latent = dit_sizes(d)
    if cfg.out_dim != latent:
        raise ConfigError(f"the DiT predicts {cfg.out_dim} channels but takes {latent}-channel latents")
    return DiTSpec(dim=cfg.dim, heads=cfg.num_heads, depth=cfg.num_layers, latent_channels=latent)


def build_dit(d: DiTInit) -> WanDiT:
    """A fresh DiT of the configured sizes (weights follow torch's RNG), or the one in ``d.path``."""
    dtype = DTYPES[d.dtype]
    if d.path:
        dit = load_wan_dit(d.path, dtype=dtype)
        if d.width_factor > 1:
            log.info("widening the DiT from %s from width %d to %d", d.path, dit.config.dim,
                     dit.config.dim * d.width_factor)
            dit = widen_wan_dit(dit, d.width_factor, seed=WIDEN_SEED)
    else:
        dit = WanDiT(dit_config(d)).to(dtype)
    dit.set_gradient_checkpointing(d.gradient_checkpointing)
    return dit


# ---- modules ----------------------------------------------------------------------------------------------
def build_modules(config: Stage2Config, encoder: nn.Module, spec: DiTSpec, patch: int) -> IMAnimationModules:
    m = config.modules
    if m.path:
        modules = load_modules(m.path)
        if config.dit.width_factor > 1 and modules.dit.dim * config.dit.width_factor == spec.dim:
            modules = widen_modules(modules, config.dit.width_factor, seed=WIDEN_SEED)
        if modules.dit.sizes() != spec.sizes():
            raise ConfigError(f"modules.path '{m.path}' was made for the DiT {modules.dit.sizes()} but this run's DiT "
                              f"is {spec.sizes()}: use the same DiT sizes in every stage")
        rc = modules.retarget.config
        if (rc.motion_tokens, rc.motion_dim) != (encoder.num_tokens, encoder.token_dim):
            raise ConfigError(f"modules.path '{m.path}' takes [{rc.motion_tokens},{rc.motion_dim}] motion tokens but "
                              f"the motion encoder makes [{encoder.num_tokens},{encoder.token_dim}]")
        if retarget_kind(modules) != config.retarget:
            raise ConfigError(f"modules.path '{m.path}' holds a '{retarget_kind(modules)}' retargeting module but the "
                              f"config says retarget '{config.retarget}'")
        return modules.train()
    try:
        retarget = RetargetConfig(**{**m.retarget, "motion_dim": encoder.token_dim, "motion_tokens": encoder.num_tokens,
                                     "latent_channels": spec.latent_channels, "patch_size": patch,
                                     "heatmap_joints": NUM_JOINTS})
        expression = ExpressionConfig(**m.expression)
        modules = IMAnimationModules(retarget, expression, spec)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"config fields 'modules.retarget' / 'modules.expression': {e}") from e
    return use_retarget_kind(modules, config.retarget)


# ---- VAE ----------------------------------------------------------------------------------------------------
def build_vae(v: VAEInit, device: torch.device) -> Any:
    """The frozen VAE: an object with ``encode(video [B,3,T,H,W] in [-1,1]) -> mu [B,C,F,h,w]``."""
    if v.factory:
        module_name, _, attr = v.factory.partition(":")
        try:
            factory = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as e:
            raise ConfigError(f"config field 'vae.factory' = '{v.factory}' cannot be imported ({e}); give "
                              f"'package.module:callable'") from e
        vae = factory(v.path)
    elif v.path:
        from ..wan.vae import load_wan_vae

        vae = load_wan_vae(v.path)
    else:
        raise ConfigError("config field 'vae.path' is empty: stages 2 and 3 need the video VAE (the Wan2.1 / Wan2.2 "
                          "VAE the DiT works with) to encode the identity image and the target clip")
    if isinstance(vae, nn.Module):
        vae = vae.to(device).eval().requires_grad_(False)
    return vae


# ---- data ---------------------------------------------------------------------------------------------------
def build_dataset(d: DataConfig) -> Any:
    from .. import data

    try:
        if d.kind == "synthetic":
            return data.SyntheticPairs(split=d.split, num_samples=d.num_samples, frames=d.frames, size=d.size,
                                       seed=d.seed, same_identity=d.same_identity, **d.options)
        if not d.root:
            raise ConfigError("config field 'data.root' is empty: data.kind 'video_folder' needs the folder of clips")
        dataset = data.VideoFolder(d.root, frames=d.frames, size=d.size, **d.options)
    except (TypeError, ValueError) as e:
        if isinstance(e, IMAnimationError):  # a message for the user already (e.g. a folder without usable clips)
            raise
        raise ConfigError(f"config field 'data': {e}") from e
    skipped = getattr(dataset, "skipped", {})
    if skipped:
        log.warning("data: skipped %d unreadable clip(s) in %s (first: %s)", len(skipped), d.root,
                    next(iter(skipped.items())))
    return dataset


def collate_fn() -> Any:
    from ..data import collate_pairs

    return collate_pairs


def augment_fn(d: DataConfig) -> Any:
    """The Stage-2 augmentation (data.augment_pair: colour jitter, random crop / scale / padding of the identity
    and target side) with ``data.augment_options`` (AugmentConfig fields)."""
    from ..data import AugmentConfig, augment_pair

    try:
        cfg = AugmentConfig(**d.augment_options)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"config field 'data.augment_options': {e}") from e

    def augment(sample: dict, generator: torch.Generator) -> dict:
        return augment_pair(sample, generator, cfg)

    return augment
