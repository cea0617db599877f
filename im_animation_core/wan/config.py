"""Sizes of a Wan-architecture DiT, and how they are read from a state dict.

The reading follows the pinned ComfyUI's model detection (``comfy/model_detection.py``, Wan branch), so a
state dict this package writes is built by ComfyUI's stock loader with the same sizes, and vice versa:

- ``head.modulation`` marks a Wan DiT; dim = its last dimension; num_heads = dim // 128;
- ffn_dim = ``blocks.0.ffn.0.weight``.shape[0]; num_layers = number of consecutive ``blocks.{i}.``;
- in_dim = ``patch_embedding.weight``.shape[1]; out_dim = ``head.head.weight``.shape[0] // 4;
- patch (1,2,2), freq_dim 256, eps 1e-6, qk_norm and cross_attn_norm on are fixed, not read.

ComfyUI does not read the text width: it always builds ``text_dim=4096`` (umT5-XXL). This package reads it
from ``text_embedding.0.weight`` so that small test models with another width also load here;
``WanDiTConfig.stock_loader_problems`` says whether ComfyUI would build the same model.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields

from ..errors import CheckpointError

# Prefixes under which a Wan DiT's keys appear in files: a full ComfyUI checkpoint, a bare diffusion model.
KEY_PREFIXES = ("model.diffusion_model.", "diffusion_model.")
COMFY_HEAD_DIM = 128  # ComfyUI derives num_heads = dim // 128
COMFY_TEXT_DIM = 4096
COMFY_FIXED = {"freq_dim": 256, "patch_size": (1, 2, 2), "eps": 1e-6, "qk_norm": True, "cross_attn_norm": True}
# Keys of Wan variants this package does not implement (image/VACE/camera/audio/animate models).
UNSUPPORTED_MARKERS = {
    "img_emb.": "an image-to-video (CLIP image cross-attention) Wan",
    "vace_patch_embedding.weight": "a VACE Wan",
    "control_adapter.": "a camera-control Wan",
    "casual_audio_encoder.": "a speech-to-video Wan",
    "audio_proj.": "a HuMo Wan",
    "face_adapter.": "a Wan-Animate model",
    "ref_conv.weight": "a Wan with a reference convolution",
}


@dataclass(kw_only=True)
class WanDiTConfig:
    """Sizes of a Wan DiT (the text-to-video / TI2V variant: text cross-attention only).

    ``num_heads`` left as None becomes ``dim // 128``, what ComfyUI's detection assumes."""

    dim: int
    ffn_dim: int
    num_heads: int | None = None
    num_layers: int
    in_dim: int
    out_dim: int
    text_dim: int = COMFY_TEXT_DIM
    freq_dim: int = 256
    patch_size: tuple[int, int, int] = field(default=(1, 2, 2))
    eps: float = 1e-6
    qk_norm: bool = True
    cross_attn_norm: bool = True

    def __post_init__(self):
        self.patch_size = tuple(int(p) for p in self.patch_size)
        if self.num_heads is None:
            self.num_heads = self.dim // COMFY_HEAD_DIM
        if len(self.patch_size) != 3:
            raise ValueError(f"patch_size must have 3 entries (t, h, w), got {self.patch_size}")
        if self.num_heads < 1 or self.dim % self.num_heads:
            raise ValueError(f"width {self.dim} does not split into {self.num_heads} heads (ComfyUI uses dim // 128 "
                             "heads, so a Wan DiT's width must be a multiple of 128)")
        if self.head_dim % 2:
            raise ValueError(f"head width {self.head_dim} must be even for the rotary embedding")
        if self.freq_dim % 2:
            raise ValueError(f"freq_dim {self.freq_dim} must be even")

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    @property
    def rope_axes(self) -> tuple[int, int, int]:
        """Channels of each head given to the (frame, row, column) rotary axes: Wan's split d - 4*(d//6),
        2*(d//6), 2*(d//6) (44, 42, 42 for 128-wide heads)."""
        d = self.head_dim
        return d - 4 * (d // 6), 2 * (d // 6), 2 * (d // 6)

    @property
    def patch_volume(self) -> int:
        return math.prod(self.patch_size)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["patch_size"] = list(self.patch_size)
        return d

    @classmethod
    def from_dict(cls, d: Mapping) -> WanDiTConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    @classmethod
    def ti2v_5b(cls) -> WanDiTConfig:
        """Wan2.2 TI2V-5B (facts section 3)."""
        return cls(dim=3072, ffn_dim=14336, num_heads=24, num_layers=30, in_dim=48, out_dim=48, text_dim=4096)

    def stock_loader_problems(self) -> list[str]:
        """Why ComfyUI's stock loader would build a different model from a state dict of this config
        (empty list: it builds exactly this one)."""
        problems = []
        if self.num_heads != self.dim // COMFY_HEAD_DIM:
            problems.append(f"num_heads {self.num_heads} != dim // 128 = {self.dim // COMFY_HEAD_DIM}")
        if self.text_dim != COMFY_TEXT_DIM:
            problems.append(f"text_dim {self.text_dim} != {COMFY_TEXT_DIM}")
        for name, value in COMFY_FIXED.items():
            if getattr(self, name) != value:
                problems.append(f"{name} {getattr(self, name)} != {value}")
        return problems

    @classmethod
    def from_state_dict(cls, sd: Mapping, **overrides) -> WanDiTConfig:
        """Sizes from a Wan DiT state dict (tensors or anything with ``.shape``, e.g. meta tensors), read as
        ComfyUI's detection reads them. Keys may carry a ``model.diffusion_model.`` prefix.
        ``overrides`` replace read values (e.g. num_heads for a non-ComfyUI head count)."""
        sd = strip_prefix(sd)
        check_supported_variant(sd)
        for key in ("head.modulation", "head.head.weight", "blocks.0.ffn.0.weight", "patch_embedding.weight"):
            if key not in sd:
                raise CheckpointError(f"not a Wan DiT state dict: key '{key}' is missing")
        dim = int(sd["head.modulation"].shape[-1])
        values = dict(
            dim=dim,
            out_dim=int(sd["head.head.weight"].shape[0]) // 4,
            num_heads=dim // COMFY_HEAD_DIM,
            ffn_dim=int(sd["blocks.0.ffn.0.weight"].shape[0]),
            num_layers=count_blocks(sd),
            in_dim=int(sd["patch_embedding.weight"].shape[1]),
        )
        if "text_embedding.0.weight" in sd:
            values["text_dim"] = int(sd["text_embedding.0.weight"].shape[1])
        values.update(overrides)
        try:
            return cls(**values)
        except ValueError as e:
            raise CheckpointError(f"unusable Wan DiT sizes {values}: {e}") from e


def strip_prefix(sd: Mapping) -> dict:
    """The state dict with a ``model.diffusion_model.`` / ``diffusion_model.`` key prefix removed (keys
    outside the prefix, e.g. a checkpoint's VAE, are dropped), or unchanged when it has none."""
    for prefix in KEY_PREFIXES:
        if any(k.startswith(prefix) for k in sd):
            return {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
    return dict(sd)


def check_supported_variant(sd: Mapping) -> None:
    if "head.modulation" not in sd:
        raise CheckpointError("not a Wan DiT state dict (no 'head.modulation' key): choose a Wan diffusion model "
                              "file, not a VAE, text encoder or IM-Animation modules file")
    for marker, what in UNSUPPORTED_MARKERS.items():
        if any(k.startswith(marker) for k in sd):
            raise CheckpointError(f"the state dict is {what} (key '{marker}...'); only the text-to-video / TI2V "
                                  "Wan architecture (e.g. Wan2.2 TI2V-5B) is implemented here")


def count_blocks(sd: Mapping) -> int:
    """Consecutive ``blocks.{i}.`` groups from 0, as ComfyUI counts them."""
    n = 0
    while any(k.startswith(f"blocks.{n}.") for k in sd):
        n += 1
    return n
