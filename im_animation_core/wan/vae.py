"""A trainable Wan2.1-architecture video VAE in plain PyTorch whose state dicts are Wan's.

The parameter names and shapes are exactly those of ComfyUI's ``comfy.ldm.wan.vae.WanVAE`` built by the
stock VAE loader (``comfy/sd.py``, Wan2.1 branch: ``decoder.middle.0.residual.0.gamma`` marks a Wan VAE,
dim = ``decoder.head.0.gamma``.shape[0], z_dim 16, dim_mult [1,2,4,4], 2 residual blocks, temporal
downsampling [False, True, True]), so a file written by ``save_wan_vae`` loads through ComfyUI's Load VAE
node, and the official ``wan_2.1_vae.safetensors`` (dim 96) loads here.

Architecture: causal 3D convolutions (time padded on the past side only), residual blocks with RMS norms,
a per-frame single-head attention in the middle, spatial x8 and causal temporal x4 compression: a clip of
4k+1 frames gives k+1 latent frames (latent 0 = frame 0, latent i = frames 4i-3..4i).

Numerics: ComfyUI encodes the first frame, then chunks of 4 frames, and decodes latent by latent, with a
feature cache that carries the last frames of every causal convolution across chunks. Because every
layer is causal in time and the cache holds exactly the frames the next chunk's receptive field needs
(zeros where the clip starts), that equals running each layer once over the whole clip with zero padding
in the past, which is what this module does (tests/unit/test_wan_vae.py compares both). The two temporal
resampling layers treat frame 0 apart, as ComfyUI's first chunk does:

- temporal downsampling keeps frame 0 as is and applies its stride-2 convolution (no padding) over the
  whole sequence: out = [x0, conv(x0,x1,x2), conv(x2,x3,x4), ...];
- temporal upsampling keeps frame 0 as is; frames 1.. go through a causal convolution (zero past) that
  doubles the channels, which are interleaved into two frames each: 1 + n frames -> 1 + 2n frames.

Never imports ComfyUI.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..checkpoints import json_metadata, load_safetensors
from ..errors import CheckpointError, InputError

WAN_VAE_MARKER = "decoder.middle.0.residual.0.gamma"  # ComfyUI: a Wan VAE
WAN22_VAE_MARKER = "decoder.upsamples.0.upsamples.0.residual.2.weight"  # ComfyUI: the Wan2.2 VAE
VAE_KEY_PREFIXES = ("first_stage_model.", "vae.")
METADATA_KEY = "im_animation_wan_vae"
# What ComfyUI's stock loader builds for a Wan2.1 VAE besides the width it reads from the file.
COMFY_FIXED = {"z_dim": 16, "dim_mult": (1, 2, 4, 4), "num_res_blocks": 2,
               "temporal_downsample": (False, True, True)}


class WanVAESizes:
    """What the Wan2.1 and Wan2.2 VAE configs share: the stage list checks, time compression and dict I/O.
    A subclass is a dataclass with ``dim_mult`` and ``temporal_downsample`` fields."""

    def _check_stages(self) -> None:
        self.dim_mult = tuple(int(m) for m in self.dim_mult)
        self.temporal_downsample = tuple(bool(t) for t in self.temporal_downsample)
        if len(self.dim_mult) < 2 or min(self.dim_mult) < 1:
            raise ValueError(f"dim_mult needs at least 2 positive entries, got {self.dim_mult}")
        if len(self.temporal_downsample) != len(self.dim_mult) - 1:
            raise ValueError(f"temporal_downsample needs {len(self.dim_mult) - 1} entries (one per downsampling), "
                             f"got {self.temporal_downsample}")

    @property
    def temporal_ratio(self) -> int:
        return 2 ** sum(self.temporal_downsample)

    def latent_frames(self, frames: int) -> int:
        """Latent frames of a clip of ``frames`` frames (trailing frames beyond 4k+1 are dropped, as ComfyUI does)."""
        return 1 + (frames - 1) // self.temporal_ratio

    def video_frames(self, latent_frames: int) -> int:
        return 1 + (latent_frames - 1) * self.temporal_ratio

    def to_dict(self) -> dict:
        d = asdict(self)
        d["dim_mult"], d["temporal_downsample"] = list(self.dim_mult), list(self.temporal_downsample)
        return d

    @classmethod
    def from_dict(cls, d: Mapping):
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


@dataclass(kw_only=True)
class WanVAEConfig(WanVAESizes):
    """Sizes of a Wan2.1-architecture VAE. The defaults are the released Wan2.1 VAE (dim 96)."""

    dim: int = 96
    z_dim: int = 16
    dim_mult: tuple[int, ...] = field(default=(1, 2, 4, 4))
    num_res_blocks: int = 2
    temporal_downsample: tuple[bool, ...] = field(default=(False, True, True))
    image_channels: int = 3
    dropout: float = 0.0

    def __post_init__(self):
        if self.dim < 1 or self.z_dim < 1 or self.num_res_blocks < 1 or self.image_channels < 1:
            raise ValueError(f"dim, z_dim, num_res_blocks and image_channels must be positive: {self}")
        self._check_stages()
        for i, m in enumerate(self.dim_mult[1:], start=1):
            if (self.dim * m) % 2:
                raise ValueError(f"decoder stage {i} width {self.dim * m} must be even (upsampling halves it)")

    @property
    def spatial_ratio(self) -> int:
        return 2 ** (len(self.dim_mult) - 1)

    def stock_loader_problems(self) -> list[str]:
        """Why ComfyUI's stock VAE loader would build a different model from a state dict of this config
        (empty: it builds exactly this one)."""
        problems = [f"{k} {getattr(self, k)} != {v}" for k, v in COMFY_FIXED.items() if getattr(self, k) != v]
        if self.dropout:
            problems.append(f"dropout {self.dropout} != 0 (ComfyUI builds it without dropout; harmless at inference)")
        return problems

    @classmethod
    def from_state_dict(cls, sd: Mapping, **overrides) -> WanVAEConfig:
        """Sizes from a Wan2.1-architecture VAE state dict (tensors or anything with ``.shape``). The width is
        read as ComfyUI reads it (``decoder.head.0.gamma``); z_dim, image channels, the stage widths, the
        residual block count and the temporal downsampling are read from the encoder's keys (ComfyUI
        assumes the fixed values of ``COMFY_FIXED``; see ``stock_loader_problems``)."""
        sd = strip_vae_prefix(sd)
        check_wan21_vae(sd)
        dim = int(sd["decoder.head.0.gamma"].shape[0])
        stages: list[dict] = [{"blocks": 0, "out": None, "temporal": None}]
        n = 0
        while any(k.startswith(f"encoder.downsamples.{n}.") for k in sd):
            p = f"encoder.downsamples.{n}."
            if p + "residual.6.weight" in sd:
                if stages[-1]["temporal"] is not None:
                    stages.append({"blocks": 0, "out": None, "temporal": None})
                stages[-1]["blocks"] += 1
                stages[-1]["out"] = int(sd[p + "residual.6.weight"].shape[0])
            elif p + "resample.1.weight" in sd:
                stages[-1]["temporal"] = p + "time_conv.weight" in sd
            else:
                raise CheckpointError(f"unexpected encoder layer {p[:-1]} (keys {[k for k in sd if k.startswith(p)]})")
            n += 1
        blocks = {s["blocks"] for s in stages}
        if len(stages) < 2 or len(blocks) != 1 or stages[-1]["temporal"] is not None or any(
                s["out"] is None or s["out"] % dim for s in stages):
            raise CheckpointError(f"cannot read the Wan VAE's encoder stages from the state dict (width {dim}): "
                                  f"{stages}")
        values = dict(dim=dim, z_dim=int(sd["conv2.weight"].shape[0]),
                      dim_mult=tuple(s["out"] // dim for s in stages), num_res_blocks=blocks.pop(),
                      temporal_downsample=tuple(s["temporal"] for s in stages[:-1]),
                      image_channels=int(sd["encoder.conv1.weight"].shape[1]))
        values.update(overrides)
        try:
            return cls(**values)
        except ValueError as e:
            raise CheckpointError(f"unusable Wan VAE sizes {values}: {e}") from e


def strip_vae_prefix(sd: Mapping) -> dict:
    """The state dict with a ``first_stage_model.`` / ``vae.`` key prefix removed (keys outside it dropped),
    or unchanged when it has none."""
    if WAN_VAE_MARKER in sd:
        return dict(sd)
    for prefix in VAE_KEY_PREFIXES:
        if prefix + WAN_VAE_MARKER in sd:
            return {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
    return dict(sd)


def check_wan21_vae(sd: Mapping) -> None:
    if WAN_VAE_MARKER not in sd:
        raise CheckpointError(f"not a Wan VAE state dict (no '{WAN_VAE_MARKER}' key): choose a Wan2.1-architecture "
                              "VAE file, not a DiT, text encoder or another VAE")
    if WAN22_VAE_MARKER in sd:
        raise CheckpointError("the state dict is the Wan2.2 VAE (48 latent channels, x16 spatial), not the Wan2.1 "
                              "architecture (16 channels, x8 spatial): load it with "
                              "im_animation_core.wan.vae22.load_wan22_vae")
    for key in ("decoder.head.0.gamma", "conv2.weight", "encoder.conv1.weight"):
        if key not in sd:
            raise CheckpointError(f"incomplete Wan VAE state dict: key '{key}' is missing")


# ----------------------------------------------------------------------------------------------- layers


def _triple(v) -> tuple[int, int, int]:
    return (v, v, v) if isinstance(v, int) else tuple(v)


class CausalConv3d(nn.Conv3d):
    """Conv3d whose time axis is padded with ``2 * padding_t`` zero frames in the past and none in the
    future (space symmetrically), so output frame t sees input frames <= t."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0):
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=0)
        pt, ph, pw = _triple(padding)
        self.causal_padding = (pw, pw, ph, ph, 2 * pt, 0)
        self.stream: dict | None = None  # see ``streaming``

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        past_frames = self.causal_padding[4]
        if self.stream is not None and past_frames:
            # the previous chunk's last input frames stand in for the zero padding (zeros before the first)
            past = self.stream.get("past")
            if past is None:
                past = x.new_zeros(*x.shape[:2], past_frames, *x.shape[3:])
            x = torch.cat([past, x], dim=2)
            self.stream["past"] = x[:, :, -past_frames:]
            return super().forward(F.pad(x, self.causal_padding[:4]))
        if any(self.causal_padding):
            x = F.pad(x, self.causal_padding)
        return super().forward(x)


@contextmanager
def streaming(module: nn.Module):
    """Run ``module`` chunk by chunk of frames, in order, inside this block: every layer that looks back in time
    (``CausalConv3d``, ``Resample``, the Wan2.2 ``DupUp``) carries what it needs from the previous chunk, so the
    concatenated outputs equal one run over the whole clip, with the memory of one chunk. Chunks must keep
    temporal resampling aligned: the first chunk holds frame 0 and an odd frame count at every temporal
    downsampling, the later ones even counts (ComfyUI's 1 frame, then 4). No gradient through the carried
    frames is intended (inference)."""
    layers = [m for m in module.modules() if hasattr(m, "stream")]
    for m in layers:
        m.stream = {}
    try:
        yield module
    finally:
        for m in layers:
            m.stream = None


class RMSNorm(nn.Module):
    """Channel RMS norm (channels at dim 1): x / ||x|| * sqrt(C) * gamma; gamma is [C,1,1(,1)]."""

    def __init__(self, channels: int, spatial_dims: int = 3):
        super().__init__()
        self.scale = channels**0.5
        self.gamma = nn.Parameter(torch.ones(channels, *([1] * spatial_dims)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=1) * self.scale * self.gamma.to(x)


def _per_frame(fn, x: torch.Tensor) -> torch.Tensor:
    """Apply a 2D op to every frame of [B,C,T,H,W]."""
    b, _, t = x.shape[:3]
    y = fn(x.transpose(1, 2).flatten(0, 1))
    return y.unflatten(0, (b, t)).transpose(1, 2)


class ResidualBlock(nn.Module):
    def __init__(self, in_dim: int, out_dim: int, dropout: float = 0.0):
        super().__init__()
        self.residual = nn.Sequential(
            RMSNorm(in_dim), nn.SiLU(), CausalConv3d(in_dim, out_dim, 3, padding=1),
            RMSNorm(out_dim), nn.SiLU(), nn.Dropout(dropout), CausalConv3d(out_dim, out_dim, 3, padding=1))
        self.shortcut = CausalConv3d(in_dim, out_dim, 1) if in_dim != out_dim else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.residual(x) + self.shortcut(x)


class AttentionBlock(nn.Module):
    """Single-head self-attention over the pixels of each frame, residual."""

    def __init__(self, dim: int):
        super().__init__()
        self.norm = RMSNorm(dim, spatial_dims=2)
        self.to_qkv = nn.Conv2d(dim, dim * 3, 1)
        self.proj = nn.Conv2d(dim, dim, 1)

    def _attend(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        q, k, v = (t.reshape(n, 1, c, h * w).transpose(2, 3) for t in self.to_qkv(self.norm(x)).chunk(3, dim=1))
        y = F.scaled_dot_product_attention(q, k, v)
        return self.proj(y.transpose(2, 3).reshape(n, c, h, w))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + _per_frame(self._attend, x)


class Resample(nn.Module):
    """x2 spatial down/upsampling, optionally with causal x2 temporal down/upsampling (see module doc).
    Upsampling halves the channels unless ``keep_width`` (the Wan2.2 VAE's decoder keeps them)."""

    MODES = ("upsample2d", "upsample3d", "downsample2d", "downsample3d")

    def __init__(self, dim: int, mode: str, keep_width: bool = False):
        super().__init__()
        if mode not in self.MODES:
            raise ValueError(f"mode must be one of {self.MODES}, got {mode!r}")
        self.mode = mode
        self.stream: dict | None = None  # see ``streaming``
        if mode.startswith("upsample"):
            self.resample = nn.Sequential(nn.Upsample(scale_factor=(2.0, 2.0), mode="nearest-exact"),
                                          nn.Conv2d(dim, dim if keep_width else dim // 2, 3, padding=1))
            if mode == "upsample3d":
                self.time_conv = CausalConv3d(dim, dim * 2, (3, 1, 1), padding=(1, 0, 0))
        else:
            self.resample = nn.Sequential(nn.ZeroPad2d((0, 1, 0, 1)), nn.Conv2d(dim, dim, 3, stride=2))
            if mode == "downsample3d":
                self.time_conv = CausalConv3d(dim, dim, (3, 1, 1), stride=(2, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t, h, w = x.shape
        first = not self.stream  # the whole clip, or the first chunk of a stream: frame 0 is treated apart
        if self.mode == "upsample3d":
            later = x[:, :, 1:] if first else x
            n = later.shape[2]
            if n:
                y = self.time_conv(later)  # [B,2C,n,H,W]: two output frames per input frame
                y = y.view(b, 2, c, n, h, w).permute(0, 2, 3, 1, 4, 5).reshape(b, c, 2 * n, h, w)
                x = torch.cat([x[:, :, :1], y], dim=2) if first else y
        x = _per_frame(self.resample, x)
        if self.mode == "downsample3d":
            last = x[:, :, -1:]
            if not first:
                if t % 2:
                    raise InputError(f"temporal downsampling of a later chunk needs an even frame count, got {t}")
                x = self.time_conv(torch.cat([self.stream["last"], x], dim=2))
            elif t > 1:
                if t % 2 == 0:
                    raise InputError(f"temporal downsampling needs an odd frame count (1 + 2k), got {t}")
                x = torch.cat([x[:, :, :1], self.time_conv(x)], dim=2)
            if self.stream is not None:
                self.stream["last"] = last
        if self.stream is not None:
            self.stream["started"] = True
        return x


def _run(layers: Sequence[nn.Module], x: torch.Tensor, use_checkpoint: bool) -> torch.Tensor:
    for layer in layers:
        if use_checkpoint and torch.is_grad_enabled() and isinstance(layer, ResidualBlock | AttentionBlock | Resample):
            x = checkpoint(layer, x, use_reentrant=False)
        else:
            x = layer(x)
    return x


class Encoder3d(nn.Module):
    def __init__(self, c: WanVAEConfig):
        super().__init__()
        dims = [c.dim * m for m in (1, *c.dim_mult)]
        self.conv1 = CausalConv3d(c.image_channels, dims[0], 3, padding=1)
        layers: list[nn.Module] = []
        for i, (in_dim, out_dim) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
            for _ in range(c.num_res_blocks):
                layers.append(ResidualBlock(in_dim, out_dim, c.dropout))
                in_dim = out_dim
            if i < len(c.dim_mult) - 1:
                layers.append(Resample(out_dim, "downsample3d" if c.temporal_downsample[i] else "downsample2d"))
        self.downsamples = nn.Sequential(*layers)
        top = dims[-1]
        self.middle = nn.Sequential(ResidualBlock(top, top, c.dropout), AttentionBlock(top),
                                    ResidualBlock(top, top, c.dropout))
        self.head = nn.Sequential(RMSNorm(top), nn.SiLU(), CausalConv3d(top, c.z_dim * 2, 3, padding=1))
        self.gradient_checkpointing = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        x = _run(self.downsamples, x, self.gradient_checkpointing)
        x = _run(self.middle, x, self.gradient_checkpointing)
        return self.head(x)


class Decoder3d(nn.Module):
    def __init__(self, c: WanVAEConfig):
        super().__init__()
        mult = c.dim_mult[::-1]
        temporal_upsample = c.temporal_downsample[::-1]
        dims = [c.dim * m for m in (mult[0], *mult)]
        self.conv1 = CausalConv3d(c.z_dim, dims[0], 3, padding=1)
        self.middle = nn.Sequential(ResidualBlock(dims[0], dims[0], c.dropout), AttentionBlock(dims[0]),
                                    ResidualBlock(dims[0], dims[0], c.dropout))
        layers: list[nn.Module] = []
        for i, (in_dim, out_dim) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
            if i > 0:
                in_dim //= 2  # the previous stage's upsampling halved the channels
            for _ in range(c.num_res_blocks + 1):
                layers.append(ResidualBlock(in_dim, out_dim, c.dropout))
                in_dim = out_dim
            if i < len(mult) - 1:
                layers.append(Resample(out_dim, "upsample3d" if temporal_upsample[i] else "upsample2d"))
        self.upsamples = nn.Sequential(*layers)
        self.head = nn.Sequential(RMSNorm(dims[-1]), nn.SiLU(), CausalConv3d(dims[-1], c.image_channels, 3, padding=1))
        self.gradient_checkpointing = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        x = _run(self.middle, x, self.gradient_checkpointing)
        x = _run(self.upsamples, x, self.gradient_checkpointing)
        return self.head(x)


# ------------------------------------------------------------------------------------------------ model


class WanVAEBase(nn.Module):
    """What the Wan2.1 and Wan2.2 VAE classes share: loading from and writing Wan state dicts, gradient
    checkpointing, the parameter dtype and the input check. A subclass sets ``config_class`` (its config,
    with ``from_state_dict``, ``image_channels``, ``spatial_ratio``, ``latent_frames`` and ``video_frames``)
    and ``family`` (its name in error messages), and builds ``encoder``, ``conv1``, ``conv2`` and ``decoder``."""

    config_class: type
    family: str

    @classmethod
    def from_state_dict(cls, sd: Mapping[str, torch.Tensor], *, dtype: torch.dtype | None = None,
                        device: str | torch.device | None = None):
        sd = strip_vae_prefix(sd)
        config = cls.config_class.from_state_dict(sd)
        with torch.device("meta"):
            model = cls(config)
        try:
            model.load_state_dict(sd, strict=True, assign=True)
        except RuntimeError as e:
            raise CheckpointError(f"the {cls.family} state dict does not fit the architecture read from it "
                                  f"({config}): {e}") from e
        return model.to(device=device, dtype=dtype)

    def wan_state_dict(self) -> dict[str, torch.Tensor]:
        """The state dict as ComfyUI stores it (contiguous tensors, no prefix)."""
        return {k: v.detach().contiguous() for k, v in self.state_dict().items()}

    def set_gradient_checkpointing(self, enabled: bool = True) -> None:
        self.encoder.gradient_checkpointing = self.decoder.gradient_checkpointing = bool(enabled)

    @property
    def dtype(self) -> torch.dtype:
        return self.conv1.weight.dtype

    def _check_video(self, video: torch.Tensor) -> torch.Tensor:
        c = self.config
        if video.ndim != 5 or video.shape[1] != c.image_channels:
            raise InputError(f"video must be [B,{c.image_channels},T,H,W] in [-1,1], got {tuple(video.shape)}")
        h, w = video.shape[-2:]
        r = c.spatial_ratio
        if h % r or w % r or h == 0 or w == 0:
            raise InputError(f"video height and width must be positive multiples of {r} for the {self.family}, "
                             f"got {h}x{w}: resize or crop the frames")
        t = video.shape[2]
        if t < 1:
            raise InputError("video has no frames")
        keep = c.video_frames(c.latent_frames(t))
        return video[:, :, :keep] if keep != t else video  # ComfyUI drops frames beyond the last 4k+1


class WanVAE(WanVAEBase):
    """Wan2.1-architecture video VAE. Pixels are [B,C,T,H,W] in [-1,1] (ComfyUI's ``VAE`` maps its [0,1]
    images with x*2-1 before, and clamps (y+1)/2 after); latents are [B,z_dim,F,h,w], raw (not normalised:
    ``latent_format.Wan21LatentFormat.process_in`` gives what the sampler sees)."""

    config_class = WanVAEConfig
    family = "Wan VAE"

    def __init__(self, config: WanVAEConfig | None = None, **kwargs):
        super().__init__()
        if config is None:
            config = WanVAEConfig(**kwargs)
        elif kwargs:
            raise TypeError("give either a WanVAEConfig or keyword sizes, not both")
        self.config = config
        self.encoder = Encoder3d(config)
        self.conv1 = CausalConv3d(config.z_dim * 2, config.z_dim * 2, 1)
        self.conv2 = CausalConv3d(config.z_dim, config.z_dim, 1)
        self.decoder = Decoder3d(config)
        self.init_weights()

    LOGVAR_INIT = -6.0

    @torch.no_grad()
    def init_weights(self) -> None:
        """A fresh model for training: He-normal convolutions (N(0, 2/fan_in), zero bias), unit RMS gains, and
        the posterior's log-variance starting at LOGVAR_INIT everywhere (sigma 0.05, so the sampled latent is
        not drowned in unit noise while mu is still small); a loaded state dict replaces all of it.

        He init matters here: with PyTorch's default conv init (gain 1/sqrt(3)) the un-normalised skip path
        (shortcuts, resampling convs) shrinks at every stage while the RMS-normed residual branches do not,
        and a dim-8 VAE overfitting 4 clips reached 15 dB after 100 steps instead of 20.5 dB."""
        if self.conv1.weight.is_meta:
            return
        for m in self.modules():
            if isinstance(m, nn.Conv2d | nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, RMSNorm):
                m.gamma.fill_(1.0)
        z = self.config.z_dim
        self.conv1.weight[z:].zero_()
        self.conv1.bias[z:].fill_(self.LOGVAR_INIT)

    def encode_dist(self, video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, logvar), each [B,z_dim,F,h,w], of a clip [B,C,T,H,W] in [-1,1]; T = 4k+1 (extra trailing
        frames are dropped, as ComfyUI does), F = k+1, h = H/8, w = W/8."""
        video = self._check_video(video).to(self.dtype)
        mu, logvar = self.conv1(self.encoder(video)).chunk(2, dim=1)
        return mu, logvar

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        """The latent mean (what ComfyUI's VAE Encode returns) of a clip [B,C,T,H,W] in [-1,1]."""
        return self.encode_dist(video)[0]

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Pixels [B,C,4(F-1)+1,8h,8w], nominally in [-1,1] (not clamped), of latents [B,z_dim,F,h,w]."""
        c = self.config
        if z.ndim != 5 or z.shape[1] != c.z_dim or min(z.shape[2:]) < 1:
            raise InputError(f"latents must be [B,{c.z_dim},F,h,w], got {tuple(z.shape)}")
        return self.decoder(self.conv2(z.to(self.dtype)))

    def forward(self, video: torch.Tensor, sample: bool = True,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(reconstruction, mu, logvar); the decoder sees mu + sigma * noise when ``sample``, else mu."""
        mu, logvar = self.encode_dist(video)
        z = mu
        if sample:
            noise = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
            z = mu + torch.exp(0.5 * logvar.clamp(-30.0, 20.0)) * noise
        return self.decode(z), mu, logvar


# ------------------------------------------------------------------------------------------------ files


def load_wan_vae_state_dict(path: str | Path, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """The Wan2.1-architecture VAE state dict of a .safetensors file, keys without prefix."""
    sd = load_safetensors(path, "Wan VAE", device)
    sd = strip_vae_prefix(sd)
    try:
        WanVAEConfig.from_state_dict(sd)
    except CheckpointError as e:
        raise CheckpointError(f"'{path}': {e}") from e
    return sd


def load_wan_vae(path: str | Path, dtype: torch.dtype | None = None, device: str | torch.device = "cpu") -> WanVAE:
    return WanVAE.from_state_dict(load_wan_vae_state_dict(path, device=device), dtype=dtype, device=device)


def save_wan_vae(model: WanVAE, path: str | Path, dtype: torch.dtype | None = None,
                 metadata: Mapping[str, str] | None = None) -> Path:
    """Write the VAE as a .safetensors file that ComfyUI's stock Load VAE reads (Wan2.1 VAE detection).
    The config goes into the metadata key ``im_animation_wan_vae`` (ComfyUI ignores it)."""
    problems = model.config.stock_loader_problems()
    problems = [p for p in problems if not p.startswith("dropout")]
    if problems:
        raise ValueError(f"ComfyUI's stock VAE loader would build another model from this VAE: {problems}")
    sd = model.wan_state_dict()
    if dtype is not None:
        sd = {k: v.to(dtype) for k, v in sd.items()}
    meta = {METADATA_KEY: json.dumps(model.config.to_dict()), **(metadata or {})}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.cpu() for k, v in sd.items()}, str(path), metadata=meta)
    return path


def vae_file_metadata(path: str | Path) -> dict:
    """The ``im_animation_wan_vae`` metadata of a file written by ``save_wan_vae`` ({} for others)."""
    return json_metadata(path, METADATA_KEY, "Wan VAE")
