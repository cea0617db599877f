"""Configuration of the motion tokenizer and how to infer it from a checkpoint.

The schema is that of the released IM-Animation motion encoder (a TiTok-style ViT encoder with
learnable latent tokens and a vector quantiser). Every size is read from tensor shapes; the
``config.yaml`` published beside the weights, when present, supplies what shapes cannot (the number
of attention heads, via the model size name) and is cross-checked against the shapes.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from ..errors import CheckpointError

# name -> (width, layers, heads); MLP ratio 4 for all of them.
MODEL_SIZES: dict[str, tuple[int, int, int]] = {
    "small": (512, 8, 8),
    "base": (768, 12, 12),
    "large": (1024, 24, 16),
}

HEAD_DIM = 64


def conv_output_size(size: int, kernel: int, padding: int) -> int:
    """Output length of a convolution with stride == kernel along one axis (pixels -> patches)."""
    return (size + 2 * padding - kernel) // kernel + 1


@dataclass(frozen=True)
class MotionTokenizerConfig:
    """Sizes of a motion tokenizer.

    width: transformer width W; layers: number of transformer blocks; heads: attention heads (W // heads
    is the head dimension); num_latent_tokens: motion tokens per frame (32 released); token_size: channels
    of a motion token / codebook vector (12); codebook_size: codebook rows (4096); patch_size: patch conv
    kernel and stride in pixels; image_size: side of the square input in pixels; patch_padding: zero
    padding (height, width) of the patch conv in pixels, (4, 2) in the released model; mlp_ratio: MLP
    hidden width / W; use_l2_norm: l2-normalise latents and codebook before the nearest-row search.
    """

    width: int = 1024
    layers: int = 24
    heads: int = 16
    num_latent_tokens: int = 32
    token_size: int = 12
    codebook_size: int = 4096
    patch_size: int = 16
    image_size: int = 256
    patch_padding: tuple[int, int] = (4, 2)
    mlp_ratio: int = 4
    use_l2_norm: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "patch_padding", tuple(int(p) for p in self.patch_padding))
        positive = ("width", "layers", "heads", "num_latent_tokens", "token_size", "codebook_size",
                    "patch_size", "image_size", "mlp_ratio")
        bad = [name for name in positive if int(getattr(self, name)) <= 0]
        if bad:
            raise ValueError(f"MotionTokenizerConfig: {', '.join(bad)} must be positive, got {self}")
        if self.width % self.heads:
            raise ValueError(f"MotionTokenizerConfig: width {self.width} is not divisible by heads "
                             f"{self.heads}")
        if len(self.patch_padding) != 2 or min(self.patch_padding) < 0:
            raise ValueError(f"MotionTokenizerConfig: patch_padding must be two non-negative ints, "
                             f"got {self.patch_padding}")
        if min(self.grid_size) <= 0:
            raise ValueError(f"MotionTokenizerConfig: image_size {self.image_size} is too small for "
                             f"patch_size {self.patch_size}")

    # ---- derived sizes -------------------------------------------------------------------------------
    @property
    def head_dim(self) -> int:
        return self.width // self.heads

    @property
    def grid_size(self) -> tuple[int, int]:
        """(rows, columns) of the patch grid produced by the padded patch conv."""
        ph, pw = self.patch_padding
        return (conv_output_size(self.image_size, self.patch_size, ph),
                conv_output_size(self.image_size, self.patch_size, pw))

    @property
    def num_patches(self) -> int:
        gh, gw = self.grid_size
        return gh * gw

    @property
    def seq_len(self) -> int:
        """Transformer sequence length: class token + patches + latent tokens."""
        return 1 + self.num_patches + self.num_latent_tokens

    @property
    def model_size(self) -> str | None:
        """'small' / 'base' / 'large' when width, layers and heads match a named size, else None."""
        for name, sizes in MODEL_SIZES.items():
            if sizes == (self.width, self.layers, self.heads):
                return name
        return None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    # ---- constructors --------------------------------------------------------------------------------
    @classmethod
    def preset(cls, name: str, **overrides: Any) -> MotionTokenizerConfig:
        """A named size ('small', 'base', 'large'); keyword overrides replace single fields."""
        if name not in MODEL_SIZES:
            raise ValueError(f"unknown motion tokenizer size {name!r}; choose one of {sorted(MODEL_SIZES)}")
        width, layers, heads = MODEL_SIZES[name]
        return replace(cls(width=width, layers=layers, heads=heads), **overrides)

    @classmethod
    def small(cls, **overrides: Any) -> MotionTokenizerConfig:
        return cls.preset("small", **overrides)

    @classmethod
    def base(cls, **overrides: Any) -> MotionTokenizerConfig:
        return cls.preset("base", **overrides)

    @classmethod
    def large(cls, **overrides: Any) -> MotionTokenizerConfig:
        return cls.preset("large", **overrides)

    @classmethod
    def from_state_dict(cls, state_dict: Mapping[str, Any],
                        yaml_config: Mapping[str, Any] | None = None) -> MotionTokenizerConfig:
        """Infer the config from a state dict (tensors, or anything with a ``.shape``, or shape tuples).

        yaml_config: the keys of a released ``config.yaml`` as returned by :func:`read_config_yaml`; its
        model size gives the number of heads, and every size it states must agree with the shapes.
        Raises CheckpointError when a tensor needed to infer a size is missing or malformed.
        """
        shapes = {name: _shape_of(value) for name, value in state_dict.items()}
        return infer_config(shapes, yaml_config)


def _shape_of(value: Any) -> tuple[int, ...]:
    shape = getattr(value, "shape", value)
    return tuple(int(s) for s in shape)


def _need(shapes: Mapping[str, tuple[int, ...]], name: str, ndim: int) -> tuple[int, ...]:
    if name not in shapes:
        raise CheckpointError(f"motion tokenizer checkpoint: tensor '{name}' is missing, so the model size "
                              f"cannot be inferred. Select the released motion_encoder_latest.safetensors "
                              f"(or a file with the same tensor names).")
    shape = shapes[name]
    if len(shape) != ndim:
        raise CheckpointError(f"motion tokenizer checkpoint: tensor '{name}' has shape {list(shape)}, "
                              f"expected {ndim} dimensions. The file is not a motion tokenizer.")
    return shape


def infer_config(shapes: Mapping[str, tuple[int, ...]],
                 yaml_config: Mapping[str, Any] | None = None) -> MotionTokenizerConfig:
    """Infer a :class:`MotionTokenizerConfig` from tensor shapes (name -> shape) and optional yaml keys.

    Only the shapes needed to read each size are checked here; full validation against the expected
    schema is :func:`im_animation_core.tokenizer.checkpoint.validate_shapes`.
    """
    yaml_config = dict(yaml_config or {})
    where = "motion tokenizer checkpoint"
    width, in_ch, kh, kw = _need(shapes, "encoder.patch_embed.weight", 4)
    if in_ch != 3 or kh != kw:
        raise CheckpointError(f"{where}: 'encoder.patch_embed.weight' has shape {[width, in_ch, kh, kw]}, "
                              f"expected [width, 3, patch, patch]. The file is not a motion tokenizer.")
    patch_size = kh
    layer_ids = {int(m.group(1)) for name in shapes
                 if (m := re.fullmatch(r"encoder\.transformer\.(\d+)\..+", name))}
    if not layer_ids:
        raise CheckpointError(f"{where}: no 'encoder.transformer.<i>.*' tensors found, so the depth cannot "
                              f"be inferred. The file is not a motion tokenizer.")
    layers = max(layer_ids) + 1
    num_latent_tokens = _need(shapes, "latent_tokens", 2)[0]
    token_size = _need(shapes, "encoder.conv_out.weight", 4)[0]
    codebook_size = _need(shapes, "quantize.embedding.weight", 2)[0]
    hidden = _need(shapes, "encoder.transformer.0.mlp.c_fc.weight", 2)[0]
    if hidden % width:
        raise CheckpointError(f"{where}: MLP hidden width {hidden} is not a multiple of the width {width}.")
    mlp_ratio = hidden // width
    num_pos = _need(shapes, "encoder.positional_embedding", 2)[0]

    model_size = yaml_config.get("model_size")
    heads: int | None = None
    if model_size is not None:
        if model_size not in MODEL_SIZES:
            raise CheckpointError(f"config.yaml: vit_enc_model_size '{model_size}' is unknown; expected one "
                                  f"of {sorted(MODEL_SIZES)}. Fix or remove config.yaml.")
        y_width, y_layers, heads = MODEL_SIZES[model_size]
        if (y_width, y_layers) != (width, layers):
            raise CheckpointError(f"config.yaml says model size '{model_size}' (width {y_width}, {y_layers} "
                                  f"layers) but the weights have width {width} and {layers} layers. The "
                                  f"config.yaml beside the file belongs to another checkpoint: fix or remove "
                                  f"it.")
    elif width % HEAD_DIM == 0:
        heads = width // HEAD_DIM
    else:
        raise CheckpointError(f"{where}: width {width} is not a multiple of {HEAD_DIM}, so the number of "
                              f"attention heads cannot be inferred. Put a config.yaml with "
                              f"vit_enc_model_size beside the file.")

    image_size = yaml_config.get("image_size")
    # The released padding (4, 2) for 16-pixel patches, scaled with the patch (8-pixel patches: (2, 1)), so a
    # smaller tokenizer trained with the scaled padding loads without a config.yaml.
    padding = (patch_size // 4, patch_size // 8)
    if image_size is None:
        image_size = _infer_image_size(num_pos - 1, patch_size, padding)
        if image_size is None:
            raise CheckpointError(f"{where}: 'encoder.positional_embedding' has {num_pos} rows, which is not "
                                  f"1 + a square patch grid; the file is not a motion tokenizer.")

    for key, value in (("codebook_size", codebook_size), ("token_size", token_size),
                       ("num_latent_tokens", num_latent_tokens), ("patch_size", patch_size)):
        if key in yaml_config and int(yaml_config[key]) != value:
            raise CheckpointError(f"config.yaml says {key} = {yaml_config[key]} but the weights have "
                                  f"{value}. The config.yaml beside the file belongs to another checkpoint: "
                                  f"fix or remove it.")
    try:
        return MotionTokenizerConfig(
            width=width, layers=layers, heads=heads, num_latent_tokens=num_latent_tokens,
            token_size=token_size, codebook_size=codebook_size, patch_size=patch_size,
            image_size=int(image_size), patch_padding=padding, mlp_ratio=mlp_ratio,
            use_l2_norm=bool(yaml_config.get("use_l2_norm", True)),
        )
    except ValueError as err:
        raise CheckpointError(f"{where}: inconsistent sizes ({err}).") from err


def _infer_image_size(num_patches: int, patch_size: int, padding: Sequence[int]) -> int | None:
    """Smallest-surprise image side whose padded patch grid has ``num_patches`` cells (256 preferred)."""
    grid = math.isqrt(num_patches)
    if grid * grid != num_patches or grid == 0:
        return None
    candidates = [256] + [grid * patch_size + delta for delta in range(0, patch_size)]
    for size in candidates:
        if all(conv_output_size(size, patch_size, p) == grid for p in padding):
            return size
    return None


# ---- config.yaml -------------------------------------------------------------------------------------
_YAML_KEYS = {
    # released key -> our key
    "codebook_size": "codebook_size",
    "token_size": "token_size",
    "use_l2_norm": "use_l2_norm",
    "vit_enc_model_size": "model_size",
    "vit_enc_patch_size": "patch_size",
    "num_latent_tokens": "num_latent_tokens",
    "quantize_mode": "quantize_mode",
    "is_legacy": "is_legacy",
    "height_size": "height_size",
    "width_size": "width_size",
}


def read_config_yaml(path: str | Path) -> dict[str, Any]:
    """Read the keys of a released motion encoder ``config.yaml`` that matter for inference.

    Returns a dict with our names: codebook_size, token_size, use_l2_norm, model_size, patch_size,
    num_latent_tokens, image_size (from height_size / width_size), for the keys present. Raises
    CheckpointError for an unreadable file or a setting this implementation does not support
    (quantize_mode other than vq, is_legacy false, non-square preprocessing).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise CheckpointError(f"config.yaml '{path}' cannot be read ({err}); fix or remove it.") from err
    raw = _parse_yaml_keys(text, path)
    found: dict[str, Any] = {}
    for key, ours in _YAML_KEYS.items():
        if key in raw:
            found[ours] = raw[key]
    out: dict[str, Any] = {}
    try:
        for key in ("codebook_size", "token_size", "patch_size", "num_latent_tokens"):
            if key in found:
                out[key] = int(found[key])
        if "use_l2_norm" in found:
            out["use_l2_norm"] = _as_bool(found["use_l2_norm"])
        if "model_size" in found:
            out["model_size"] = str(found["model_size"]).strip()
        if "quantize_mode" in found and str(found["quantize_mode"]).strip() != "vq":
            raise CheckpointError(f"config.yaml '{path}': quantize_mode '{found['quantize_mode']}' is not "
                                  f"supported; the released motion encoder uses 'vq'.")
        if "is_legacy" in found and not _as_bool(found["is_legacy"]):
            raise CheckpointError(f"config.yaml '{path}': is_legacy false is not supported; the released "
                                  f"motion encoder uses the legacy token reshape (is_legacy true).")
        sizes = {int(found[k]) for k in ("height_size", "width_size") if k in found}
        if len(sizes) > 1:
            raise CheckpointError(f"config.yaml '{path}': height_size and width_size differ; the motion "
                                  f"tokenizer needs square frames.")
        if sizes:
            out["image_size"] = sizes.pop()
    except (TypeError, ValueError) as err:
        if isinstance(err, CheckpointError):
            raise
        raise CheckpointError(f"config.yaml '{path}': a size is not a number ({err}); fix or remove "
                              f"it.") from err
    return out


def _as_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "yes", "on", "1"):
        return True
    if text in ("false", "no", "off", "0"):
        return False
    raise ValueError(f"not a boolean: {value!r}")


def _parse_yaml_keys(text: str, path: Path) -> dict[str, Any]:
    """Flatten every ``key: scalar`` of a yaml document (last one wins); yaml when importable."""
    try:
        import yaml  # ComfyUI depends on PyYAML
    except ImportError:  # pragma: no cover - exercised only without PyYAML
        yaml = None
    if yaml is not None:
        try:
            doc = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise CheckpointError(f"config.yaml '{path}' is not valid YAML ({err}); fix or remove "
                                  f"it.") from err
        flat: dict[str, Any] = {}

        def walk(node: Any) -> None:
            if isinstance(node, dict):
                for key, value in node.items():
                    if isinstance(value, (dict, list)):
                        walk(value)
                    else:
                        flat[str(key)] = value
            elif isinstance(node, list):
                for item in node:
                    walk(item)

        walk(doc)
        return flat
    flat = {}
    for line in text.splitlines():
        match = re.match(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*:\s*([^#]+?)\s*(#.*)?$", line)
        if match:
            flat[match.group(1)] = match.group(2).strip("'\"")
    return flat
