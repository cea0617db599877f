"""The three training stages: the trained modules of each (one nn.Module, so DDP can wrap it), their loss,
which parameters train at which learning rate, and what each stage exports.

Every loss mirrors inference (nodes/sampler.py and pipeline.py):
- motion tokens are the quantised tokenizer output of the preprocessed driving frames (straight-through);
- the retargeting transformer gets the tokens of T driving frames at times 0..T-1, the identity's *raw*
  VAE latent (what Retarget to Identity passes) and the latent frames' centre times;
- Stage 3 feeds the DiT [identity latent, target clip latents] (process_in of the VAE means, the identity as
  latent frame 0), the retargeted motion with zeros for the reference frame, expression tokens averaged per
  latent frame for every frame but the reference one, and an all-zero text context [B,512,text_dim] unless a
  sample brings text embeddings. With a clean reference (always for 48-channel Wan2.2 models) the DiT sees
  the reference frame clean with timestep 0 (ComfyUI's WAN22 with noise_mask 0 there; the sampler node patches
  a WAN21 model to do the same); with a noised one, noised at the same sigma with the same noise (what
  KSampler's inpainting gives a WAN21 model). Stage3Config.reference picks. The loss skips that frame.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ..dit_targets import moving_map
from ..expression import crop_faces
from ..frames import clip_to_video, latent_frame_count, latent_frame_times, pool_to_latent_frames
from ..heatmap_head import HeatmapHead, heatmap_mse
from ..injection import REFERENCE_FRAMES, motion_with_reference
from ..keypoints import fallback_face_boxes
from ..modules import IMAnimationModules
from ..tokenizer.encode import encode_clips, token_spread
from ..wan import WanDiT, save_wan_state_dict
from .build import (
    DTYPES,
    build_dit,
    build_encoder,
    build_heatmap_head,
    build_modules,
    build_teacher,
    build_vae,
    dit_config,
    dit_sizes,
    dit_spec,
)
from .config import ConfigError, Stage1Config, Stage2Config, Stage3Config
from .encoders import ConvMotionEncoder, TokenizerEncoder
from .modules_file import save_modules
from .retarget_init import retarget_local_attention_init_
from .targets import (
    default_shift,
    latent_frame_heatmaps,
    noisy_latent,
    sample_noise,
    square_frame_heatmaps,
)

log = logging.getLogger(__name__)

TOKENIZER_FILE = "motion_tokenizer.safetensors"
CONV_ENCODER_FILE = "conv_motion_encoder.safetensors"
HEATMAP_HEAD_FILE = "heatmap_head.safetensors"
MODULES_FILE = "im_animation_modules.safetensors"
DIT_FILE = "wan_dit.safetensors"
DATA_INIT_PAIRS = 16  # training pairs a data-fitted init (modules.retarget_init "local") looks at


def _zero() -> torch.Tensor:
    return torch.zeros((), dtype=torch.float32)


def batch_indices(batch: dict[str, Any]) -> list[int]:
    """The dataset indices of a batch's samples ("index", set by the trainer), else 0..B-1."""
    if "index" in batch:
        return [int(i) for i in batch["index"]]
    return list(range(batch["identity_latent" if "driving" not in batch else "driving"].shape[0]))


def frame_hw(batch: dict[str, Any]) -> tuple[int, int]:
    """(H, W) of the batch's pixel frames: from the target clip, or a cached batch's ``frame_size`` [B,2]."""
    if "target" in batch:
        return tuple(batch["target"].shape[2:4])
    return tuple(int(v) for v in batch["frame_size"][0])


def driver_tokens(encoder: nn.Module, batch: dict[str, Any], trainable: bool
                  ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """(tokens [B,T,L,C], aux) of the driving clips, or of a cached batch's ``tokens`` (a frozen encoder's,
    train.cache), with the same aux (token_spread over the batch's frames)."""
    if "tokens" not in batch:
        return encode_clips(encoder, batch["driving"], trainable)
    tokens = batch["tokens"]
    return tokens, {"token_spread": token_spread(tokens.flatten(0, 1))}


def _weights(config, visible_weight: torch.Tensor) -> torch.Tensor | None:
    return visible_weight if config.heatmap_visibility_weight else None


class Stage1Model(nn.Module):
    """Motion encoder + heatmap head; loss = heatmap MSE (eq. 5) + vq_weight * VQ loss."""

    def __init__(self, encoder: nn.Module, head: HeatmapHead, config: Stage1Config, encoder_trainable: bool,
                 teacher: nn.Module | None = None):
        super().__init__()
        self.encoder, self.head = encoder, head
        self.config, self.encoder_trainable = config, encoder_trainable
        # Kept out of the state dict (a frozen file input, not a trained part) and out of the optimiser.
        self.__dict__["teacher"] = teacher.eval().requires_grad_(False) if teacher is not None else None
        self.register_buffer("steps_seen", torch.zeros((), dtype=torch.long))

    def forward(self, batch: dict[str, Any], seed: int) -> dict[str, torch.Tensor]:
        c = self.config
        driving = batch["driving"]
        tokens, aux = encode_clips(self.encoder, driving, self.encoder_trainable)
        pred = self.head(rearrange(tokens, "b t l c -> (b t) l c")).float()
        joints = rearrange(batch["driving_joints"], "b t j c -> (b t) j c")
        visible = rearrange(batch["driving_visible"], "b t j -> (b t) j")
        target = square_frame_heatmaps(joints, visible, tuple(driving.shape[2:4]), tuple(pred.shape[-2:]),
                                       c.heatmap_sigma).to(pred.device)
        hm = heatmap_mse(pred, target, _weights(c, visible.float()))
        vq = aux.get("vq", _zero().to(pred.device))
        out = {"loss": hm + c.tokenizer.vq_weight * vq, "heatmap": hm, "vq": vq, "token_spread": aux["token_spread"]}
        if self.teacher is not None and (not c.teacher_steps or int(self.steps_seen) < c.teacher_steps):
            with torch.no_grad():
                taught, _, _ = self.teacher(rearrange(driving, "b t h w c -> (b t) h w c"))
            out["teacher"] = F.mse_loss(rearrange(tokens, "b t l c -> (b t) l c"), taught.to(tokens.dtype))
            out["loss"] = out["loss"] + c.teacher_weight * out["teacher"]
        if self.training:
            self.steps_seen += 1
        return out


class RetargetModel(nn.Module):
    """Motion encoder + IMAnimationModules; Stage 2's loss = L_retarget (eq. 6) + vq_weight * VQ loss."""

    def __init__(self, encoder: nn.Module, modules: IMAnimationModules, config: Stage2Config,
                 encoder_trainable: bool):
        super().__init__()
        self.encoder, self.ima = encoder, modules
        self.config, self.encoder_trainable = config, encoder_trainable

    def retarget(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """(retargeted motion [B,C_r,F,h,w], L_retarget, encoder losses) for a batch whose
        ``identity_latent`` [B,C,1,h,w] (raw VAE mean) is set."""
        c = self.config
        tokens, aux = driver_tokens(self.encoder, batch, self.encoder_trainable)
        t = tokens.shape[1]
        ref = batch["identity_latent"][:, :, 0]
        rt = self.ima.retarget
        dtype = rt.motion_in.weight.dtype
        times = torch.arange(t, dtype=torch.float32)
        motion, feats = rt(tokens.to(dtype), times, ref.to(dtype), latent_frame_times(t), return_features=True)
        if not c.heatmap_supervision:
            return motion, _zero().to(motion.device), aux
        pred = rt.heatmap_head(feats, rt.grid(ref)).float()  # [B,F,J,Hh,Wh]
        target, weight = latent_frame_heatmaps(batch["target_joints"], batch["target_visible"], frame_hw(batch),
                                               tuple(pred.shape[-2:]), c.heatmap_sigma)
        loss = heatmap_mse(pred.flatten(0, 1), target.to(pred.device).flatten(0, 1),
                           _weights(c, weight.flatten(0, 1).to(pred.device)))
        return motion, loss, aux

    def forward(self, batch: dict[str, Any], seed: int) -> dict[str, torch.Tensor]:
        _, loss, aux = self.retarget(batch)
        vq = aux.get("vq", _zero().to(loss.device))
        return {"loss": loss + self.config.tokenizer.vq_weight * vq, "retarget": loss, "vq": vq,
                "token_spread": aux["token_spread"]}


class _PerSampleExpression:
    """Block hook: the expression block on each sample with that sample's tokens [F,K,W] (ExpressionBlock
    repeats one token set over the batch, as inference has one clip), the reference frame skipped."""

    def __init__(self, block: nn.Module, tokens: list[torch.Tensor]):
        self.block, self.tokens = block, tokens

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if len(self.tokens) == 1:
            return self.block(x, self.tokens[0], skip_frames=REFERENCE_FRAMES)
        return torch.cat([self.block(x[i:i + 1], tok, skip_frames=REFERENCE_FRAMES)
                          for i, tok in enumerate(self.tokens)])


class Stage3Model(RetargetModel):
    """Motion encoder + IMAnimationModules + WanDiT; loss = L_DiT + retarget_weight * L_retarget (+ VQ)."""

    def __init__(self, encoder: nn.Module, modules: IMAnimationModules, dit: WanDiT, config: Stage3Config,
                 encoder_trainable: bool, latent_format: Any, shift: float):
        super().__init__(encoder, modules, config, encoder_trainable)
        self.dit = dit
        self.latent_format, self.shift = latent_format, shift
        dit.attach_motion_patch(modules.motion_patch)

    def face_crops(self, batch: dict[str, Any]) -> torch.Tensor:
        """The driving clips' face crops [B,T,3,S,S] that the expression encoder reads (S: its crop size), or a
        cached batch's ``face_crops``."""
        if "face_crops" in batch:
            return batch["face_crops"]
        size = self.ima.expression_encoder.config.crop_size
        driving = batch["driving"]
        b, t, h, w = driving.shape[:4]
        out = []
        for i in range(b):
            if self.config.expression_face_boxes == "fallback" or "driving_face_boxes" not in batch:
                boxes = fallback_face_boxes(t, h, w)
            else:
                boxes = batch["driving_face_boxes"][i].float()
            out.append(crop_faces(driving[i], boxes.to(driving.device), size))
        return torch.stack(out)

    def expression_tokens(self, batch: dict[str, Any]) -> list[torch.Tensor]:
        """Per sample [F,K,W] expression tokens averaged over each latent frame (pipeline.encode_expression +
        ExpressionFeatures.for_length), with gradient to the expression encoder."""
        enc = self.ima.expression_encoder
        p = enc.proj.weight
        return [pool_to_latent_frames(enc(crops.to(p.device, p.dtype))) for crops in self.face_crops(batch)]

    @staticmethod
    def moving(batch: dict[str, Any], latent_hw: tuple[int, int]) -> torch.Tensor:
        """targets.moving_map of the batch [B,F,h,w], or a cached batch's ``moving``."""
        if "moving" in batch:
            return batch["moving"]
        return moving_map(batch["target"], batch["identity"], latent_hw)

    def clean_latents(self, batch: dict[str, Any]) -> torch.Tensor:
        """x0 of the DiT: the identity latent then the target's, processed, float [B,C,1+F,h,w]."""
        return self.latent_format.process_in(
            torch.cat([batch["identity_latent"], batch["target_latent"]], dim=2)).float()

    @property
    def clean_reference(self) -> bool:
        return bool(self.ima.dit.clean_reference)

    def noised_input(self, x0: torch.Tensor, noise: torch.Tensor,
                     sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(x_t, timestep) as ComfyUI's sampler gives them: sigma [B] -> timestep [B], or [B,1+F] with 0 on the
        reference frame when it is clean (DiTSpec.clean_reference)."""
        x_t = noisy_latent(x0, noise, sigma)
        timestep = sigma * 1000.0
        if self.clean_reference:  # as WAN22 with noise_mask 0 there: clean frame, per-frame timestep 0
            b, frames = x0.shape[0], x0.shape[2]
            x_t = torch.cat([x0[:, :, :REFERENCE_FRAMES], x_t[:, :, REFERENCE_FRAMES:]], dim=2)
            timestep = torch.cat([torch.zeros(b, REFERENCE_FRAMES, device=x0.device),
                                  timestep[:, None].expand(b, frames - REFERENCE_FRAMES)], dim=1)
        return x_t, timestep

    def frozen_retarget(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(retargeted motion [B,C_r,F,h,w], aux) of a frozen retargeter (retarget_trainable false): a cached
        batch's ``retargeted_motion``, else computed without gradient or heatmaps."""
        if "retargeted_motion" in batch:
            tokens = batch["tokens"]
            return batch["retargeted_motion"], {"token_spread": token_spread(tokens.flatten(0, 1))}
        tokens, aux = driver_tokens(self.encoder, batch, self.encoder_trainable)
        rt = self.ima.retarget
        dtype = rt.motion_in.weight.dtype
        t = tokens.shape[1]
        with torch.no_grad():
            motion = rt(tokens.to(dtype), torch.arange(t, dtype=torch.float32),
                        batch["identity_latent"][:, :, 0].to(dtype), latent_frame_times(t))
        return motion, aux

    def forward(self, batch: dict[str, Any], seed: int) -> dict[str, torch.Tensor]:
        c = self.config
        if c.retarget_trainable:
            motion, l_retarget, aux = self.retarget(batch)
        else:
            (motion, aux), l_retarget = self.frozen_retarget(batch), _zero()
        draws = c.dit_draws
        # every per-clip input is tiled draw-major, as sample_noise orders its draws
        x0 = self.clean_latents(batch).repeat(draws, 1, 1, 1, 1)
        b = x0.shape[0]
        sigma, noise = sample_noise(seed, batch_indices(batch), tuple(x0.shape[1:]), self.shift, draws)
        sigma, noise = sigma.to(x0.device), noise.to(x0.device)
        x_t, timestep = self.noised_input(x0, noise, sigma)
        motion = motion_with_reference(motion).repeat(draws, 1, 1, 1, 1)
        hooks = {}
        indices = self.ima.dit.expression_block_indices
        if indices:
            tokens = self.expression_tokens(batch) * draws
            hooks = {i: _PerSampleExpression(block, tokens)
                     for i, block in zip(indices, self.ima.expression_blocks, strict=True)}
        context = batch.get("text_context")
        if context is None:
            context = torch.zeros(b, c.text_len, self.dit.config.text_dim, device=x0.device)
        else:
            context = context.repeat(draws, 1, 1)
        out = self.dit(x_t.to(self.dit.dtype), timestep, context.to(x0.device), motion=motion.float(),
                       block_hooks=hooks)
        target = noise - x0
        err = (out[:, :, REFERENCE_FRAMES:].float() - target[:, :, REFERENCE_FRAMES:]).pow(2)
        l_dit = err.mean()  # logged as the paper's L_DiT whatever the weighting, so runs stay comparable
        out_losses = {"dit": l_dit}
        if c.moving_weight > 0:
            w = 1.0 + c.moving_weight * self.moving(batch, tuple(x0.shape[-2:]))[:, None].float()
            w = w.repeat(draws, 1, 1, 1, 1).to(err)
            # normalised by the mean weight, so only the balance between pixels changes, not the loss scale
            fit = (err * w).mean() / w.expand_as(err).mean()
            out_losses["dit_moving"] = fit
        else:
            fit = l_dit
        vq = aux.get("vq", _zero().to(x0.device))
        loss = fit + c.retarget_weight * l_retarget + c.tokenizer.vq_weight * vq
        return {"loss": loss, **out_losses, "retarget": l_retarget, "vq": vq, "token_spread": aux["token_spread"]}


# ---- stage objects ------------------------------------------------------------------------------------------
class Stage:
    """What the generic loop needs from a stage."""

    name: str
    model: nn.Module

    def __init__(self, config, vae: Any = None):
        self.config = config

    def param_groups(self) -> list[dict]:
        raise NotImplementedError

    def prepare(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Frozen preprocessing outside the trained model (VAE encoding)."""
        return batch

    def export(self, out_dir: Path) -> dict[str, str]:
        raise NotImplementedError

    def compile_targets(self) -> list[nn.Module]:
        """The submodules the trainer's ``compile`` option compiles: those whose many small kernels make most
        of a step (none by default)."""
        return []

    def to(self, device: torch.device) -> None:
        self.model.to(device)


def _trainable(module: nn.Module) -> list[nn.Parameter]:
    return [p for p in module.parameters() if p.requires_grad]


def _export_encoder(encoder: nn.Module, config, out_dir: Path) -> dict[str, str]:
    if isinstance(encoder, ConvMotionEncoder):
        encoder.save(out_dir / CONV_ENCODER_FILE)
        return {"conv_motion_encoder": CONV_ENCODER_FILE}
    assert isinstance(encoder, TokenizerEncoder)
    encoder.tokenizer.save(out_dir / TOKENIZER_FILE, dtype=DTYPES[config.tokenizer.save_dtype], write_config=True)
    return {"motion_tokenizer": TOKENIZER_FILE, "motion_tokenizer_config": "config.yaml"}


class Stage1(Stage):
    name = "stage1"

    def __init__(self, config: Stage1Config, vae: Any = None):
        super().__init__(config)
        encoder, trainable = build_encoder(config)
        encoder.requires_grad_(trainable)
        head = build_heatmap_head(config, encoder)
        teacher = build_teacher(config)
        self.model = Stage1Model(encoder, head, config, trainable, teacher)

    def param_groups(self) -> list[dict]:
        return [{"params": _trainable(self.model), "lr": self.config.optim.lr, "name": "stage1"}]

    def to(self, device: torch.device) -> None:
        self.model.to(device)
        if self.model.teacher is not None:
            self.model.teacher.to(device)

    def export(self, out_dir: Path) -> dict[str, str]:
        files = _export_encoder(self.model.encoder, self.config, out_dir)
        self.model.head.save(out_dir / HEATMAP_HEAD_FILE)
        files["heatmap_head"] = HEATMAP_HEAD_FILE
        return files


def _encode_video(vae: Any, clips: torch.Tensor, device: torch.device) -> torch.Tensor:
    """clips [B,T,H,W,3] in [0,1] -> raw VAE means [B,C,F,h,w] float32, without gradient."""
    video = clip_to_video(clips.to(device=device, dtype=torch.float32))
    with torch.no_grad():
        vae_dtype = getattr(vae, "dtype", torch.float32)
        return vae.encode(video.to(vae_dtype)).float()


class Stage2(Stage):
    name = "stage2"

    def __init__(self, config: Stage2Config, vae: Any = None):
        super().__init__(config)
        encoder, trainable = build_encoder(config)
        encoder.requires_grad_(trainable)
        spec = dit_spec(config.dit)
        cfg, _ = dit_sizes(config.dit)
        modules = build_modules(config, encoder, spec, cfg.patch_size[1])
        self._freeze_unused(modules)
        self.model = self._make_model(encoder, modules, trainable)
        self.spec = spec
        self.vae = vae
        self.device = torch.device("cpu")

    def _make_model(self, encoder, modules, trainable) -> nn.Module:
        return RetargetModel(encoder, modules, self.config, trainable)

    @property
    def data_init_pairs(self) -> int:
        """How many training pairs ``data_init`` wants (0: none)."""
        m = self.config.modules
        return DATA_INIT_PAIRS if m.retarget_init == "local" and not m.path else 0

    @torch.no_grad()
    def data_init(self, batch: dict[str, Any]) -> None:
        """modules.retarget_init "local" on a collated batch of the first training pairs."""
        batch = self.prepare(batch)
        tokens, _ = driver_tokens(self.model.encoder, batch, trainable=False)
        try:
            retarget_local_attention_init_(self.model.ima.retarget, tokens, batch["identity_latent"][:, :, 0])
        except ValueError as e:
            raise ConfigError(f"modules.retarget_init 'local': {e}; use 'default' for this model size") from e
        log.info("%s: retargeter initialised locally from %d training pairs", self.name, tokens.shape[0])

    def _freeze_unused(self, modules: IMAnimationModules) -> None:
        modules.requires_grad_(False)
        modules.retarget.requires_grad_(True)
        if self.config.retarget == "self_attention":
            modules.retarget.mask_token.requires_grad_(False)

    def to(self, device: torch.device) -> None:
        self.device = device
        self.model.to(device)
        if self.vae is None:
            self.vae = build_vae(self.config.vae, device)
        elif isinstance(self.vae, nn.Module):
            self.vae = self.vae.to(device).eval().requires_grad_(False)

    def param_groups(self) -> list[dict]:
        return [{"params": _trainable(self.model), "lr": self.config.optim.lr, "name": "stage2"}]

    def compile_targets(self) -> list[nn.Module]:
        return [self.model.ima.retarget]

    def _check_latent(self, latent: torch.Tensor, what: str, frames: int) -> None:
        want = self.spec.latent_channels
        if latent.shape[1] != want or latent.shape[2] != latent_frame_count(frames):
            raise ConfigError(f"the VAE turned the {what} into latents {tuple(latent.shape)}, but the DiT works on "
                              f"{want}-channel latents and {frames} frames need {latent_frame_count(frames)} latent "
                              f"frames: use the VAE that belongs to the DiT (vae.path)")
        p = self.model.ima.retarget.config.patch_size
        if latent.shape[-1] % p or latent.shape[-2] % p:
            raise ConfigError(f"the {what}'s latent grid {tuple(latent.shape[-2:])} is not a multiple of the DiT's "
                              f"patch {p}: use frame sizes that are multiples of {p} x the VAE's compression")

    def prepare(self, batch: dict[str, Any]) -> dict[str, Any]:
        """The batch with the frozen VAE's latents added (a cached batch has them already)."""
        batch = dict(batch)
        if "identity_latent" not in batch:
            batch["identity_latent"] = _encode_video(self.vae, batch["identity"][:, None], self.device)
        self._check_latent(batch["identity_latent"], "identity image", 1)
        return batch

    @torch.no_grad()
    def cached_fields(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """What train.cache stores of a live collated batch: everything a step reads that no trainable weight
        changes, per sample (leading axis B). Stage 2: the identity latent, the frozen encoder's tokens, the
        target joints and the frame size."""
        if self.model.encoder_trainable:
            raise ConfigError("a clip cache holds the motion encoder's tokens, so the encoder must be frozen "
                              "(tokenizer.trainable / conv_encoder.trainable false)")
        batch = self.prepare(batch)
        tokens, _ = encode_clips(self.model.encoder, batch["driving"], trainable=False)
        b = tokens.shape[0]
        return {"identity_latent": batch["identity_latent"], "tokens": tokens,
                "target_joints": batch["target_joints"].float(), "target_visible": batch["target_visible"].bool(),
                "frame_size": torch.tensor([frame_hw(batch)] * b, dtype=torch.int64)}

    def export(self, out_dir: Path) -> dict[str, str]:
        files = _export_encoder(self.model.encoder, self.config, out_dir)
        self.model.ima.clip_frames = self.config.data.frames  # inference retargets in pieces this long
        tokenizer = files.get("motion_tokenizer")  # None: a conv motion encoder, which the nodes do not load
        save_modules(self.model.ima, str(out_dir / MODULES_FILE),
                     tokenizer_file=str(out_dir / tokenizer) if tokenizer else None)
        files["modules"] = MODULES_FILE
        return files


class Stage3(Stage2):
    name = "stage3"

    def __init__(self, config: Stage3Config, vae: Any = None):
        from ..wan.latent_format import latent_format_for

        self._dit = build_dit(config.dit)
        super().__init__(config, vae)
        if self.spec.latent_channels != self._dit.config.in_dim:
            raise ConfigError(f"the DiT file takes {self._dit.config.in_dim} latent channels, its metadata says "
                              f"{self.spec.latent_channels}")
        self.shift = config.shift or default_shift(self.spec.latent_channels)
        self.latent_format = latent_format_for(self.spec.latent_channels)
        self.model = Stage3Model(self.model.encoder, self.model.ima, self._dit, config,
                                 self.model.encoder_trainable, self.latent_format, self.shift)
        self._dit.requires_grad_(config.dit.trainable)
        self._set_reference(config)
        log.info("stage3: flow shift %.1f (%d-channel latents), %s reference frame", self.shift,
                 self.spec.latent_channels, "clean" if self.model.clean_reference else "noised")

    def _set_reference(self, config: Stage3Config) -> None:
        """Resolve config.reference into the modules' DiTSpec (exported with them, read by the sampler node).
        "auto" keeps it: the starting modules file's mode, or for fresh modules DiTSpec's per-channel default."""
        spec = self.model.ima.dit
        if config.reference == "noised" and spec.latent_channels == 48:
            raise ConfigError("config field 'reference' is 'noised', but ComfyUI's Wan2.2 (48-channel) model always "
                              "gets a clean reference frame: use 'clean' or 'auto'")
        if config.reference != "auto":
            spec.clean_reference = config.reference == "clean"

    def _make_model(self, encoder, modules, trainable) -> nn.Module:
        dit = self._dit
        if dit.motion_patch is not None:  # a widened DiT file: its motion weights continue in the modules
            if dit.motion_patch.weight.shape != modules.motion_patch.weight.shape:
                raise ConfigError(f"the DiT file's motion channels {tuple(dit.motion_patch.weight.shape)} do not "
                                  f"fit the modules' motion patch {tuple(modules.motion_patch.weight.shape)}")
            if not self.config.modules.path:
                modules.motion_patch.load_state_dict(dit.motion_patch.state_dict())
        return RetargetModel(encoder, modules, self.config, trainable)

    def _freeze_unused(self, modules: IMAnimationModules) -> None:
        modules.requires_grad_(True)
        if not self.config.retarget_trainable:
            modules.retarget.requires_grad_(False)
        if self.config.retarget == "self_attention":
            modules.retarget.mask_token.requires_grad_(False)
        if not self.config.heatmap_supervision:
            modules.retarget.heatmap_head.requires_grad_(False)
        if not modules.dit.expression_block_indices:
            modules.expression_encoder.requires_grad_(False)

    def compile_targets(self) -> list[nn.Module]:
        return [self.model.ima.retarget, self.model.dit]

    def param_groups(self) -> list[dict]:
        dit_ids = {id(p) for p in self.model.dit.parameters()} - {id(p) for p in self.model.ima.parameters()}
        dit = [p for p in self.model.dit.parameters() if p.requires_grad and id(p) in dit_ids]
        groups = [{"params": dit, "lr": self.config.dit_lr, "name": "dit"}]
        motion_ids = set()
        if self.config.motion_lr:
            motion = [p for p in self.model.ima.motion_patch.parameters() if p.requires_grad]
            motion_ids = {id(p) for p in motion}
            groups.append({"params": motion, "lr": self.config.motion_lr, "name": "motion"})
        others = [p for p in self.model.parameters() if p.requires_grad and id(p) not in dit_ids | motion_ids]
        return [{"params": others, "lr": self.config.optim.lr, "name": "modules"}, *groups]

    def prepare(self, batch: dict[str, Any]) -> dict[str, Any]:
        batch = super().prepare(batch)
        if "target_latent" not in batch:
            batch["target_latent"] = _encode_video(self.vae, batch["target"], self.device)
        self._check_latent(batch["target_latent"], "target clip", batch["target_joints"].shape[1])
        if batch["target_latent"].shape[-2:] != batch["identity_latent"].shape[-2:]:
            raise ConfigError("the identity image and the target clip have different sizes; they must match")
        return batch

    @torch.no_grad()
    def cached_fields(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Stage 2's cached fields plus the target latents, the frozen retargeter's motion (retarget_trainable
        false), the driving face crops (when the modules have expression blocks) and the moving map (when
        moving_weight is on)."""
        # Encoded once here: Stage 2's fields read the prepared batch's latents instead of encoding the clip again
        # (the VAE is most of a cache build's time).
        batch = self.prepare(batch)
        out = super().cached_fields(batch)
        out["target_latent"] = batch["target_latent"]
        if not self.config.retarget_trainable:
            out["retargeted_motion"] = self.model.frozen_retarget(batch)[0]
        if self.model.ima.dit.expression_block_indices:
            out["face_crops"] = self.model.face_crops(batch)
        if self.config.moving_weight > 0:
            out["moving"] = moving_map(batch["target"], batch["identity"], tuple(batch["target_latent"].shape[-2:]))
        return out

    def export(self, out_dir: Path) -> dict[str, str]:
        files = super().export(out_dir)
        dit = self.model.dit
        widened = self.model.ima.motion_patch if self.config.dit.export == "widened" else None
        problems = dit.config.stock_loader_problems()
        if problems:
            log.warning("ComfyUI's stock loader would build another model from this DiT (%s); writing it anyway",
                        "; ".join(problems))
        # Export without the shared motion patch: the base DiT keeps Wan's keys (ComfyUI's stock loader).
        dit.attach_motion_patch(None)
        try:
            save_wan_state_dict(dit, out_dir / DIT_FILE, widened_motion_channels=widened,
                                dtype=DTYPES[self.config.dit.save_dtype], check_stock_loader=False)
        finally:
            dit.attach_motion_patch(self.model.ima.motion_patch)
        files["dit"] = DIT_FILE
        return files


STAGE_CLASSES = {"stage1": Stage1, "stage2": Stage2, "stage3": Stage3}

__all__ = ["DIT_FILE", "HEATMAP_HEAD_FILE", "MODULES_FILE", "STAGE_CLASSES", "TOKENIZER_FILE", "Stage",
           "Stage1", "Stage1Model", "Stage2", "Stage3", "Stage3Model", "dit_config"]
