"""Strict loading and saving of motion tokenizer checkpoints in the released safetensors format."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TypeVar

import torch
from torch import nn

from ..checkpoints import TORCH_DTYPES, header, read_checked, shape_mismatch
from ..errors import CheckpointError
from .config import MotionTokenizerConfig, infer_config, read_config_yaml

log = logging.getLogger(__name__)
# The tokenizer class (model.MotionTokenizer), passed in by its classmethods: model.py imports this module.
Tokenizer = TypeVar("Tokenizer", bound=nn.Module)

RELEASED_NUM_LATENT_TOKENS = 32
_MAX_LISTED = 8


def expected_shapes(config: MotionTokenizerConfig) -> dict[str, tuple[int, ...]]:
    """The released tensor names and shapes for ``config`` (301 tensors at the 'large' size)."""
    w, c = config.width, config.token_size
    hidden = w * config.mlp_ratio
    p = config.patch_size
    shapes: dict[str, tuple[int, ...]] = {
        "latent_tokens": (config.num_latent_tokens, w),
        "encoder.patch_embed.weight": (w, 3, p, p),
        "encoder.patch_embed.bias": (w,),
        "encoder.class_embedding": (1, w),
        "encoder.positional_embedding": (1 + config.num_patches, w),
        "encoder.latent_token_positional_embedding": (config.num_latent_tokens, w),
        "encoder.ln_pre.weight": (w,),
        "encoder.ln_pre.bias": (w,),
    }
    for i in range(config.layers):
        b = f"encoder.transformer.{i}"
        shapes.update({
            f"{b}.ln_1.weight": (w,), f"{b}.ln_1.bias": (w,),
            f"{b}.attn.in_proj_weight": (3 * w, w), f"{b}.attn.in_proj_bias": (3 * w,),
            f"{b}.attn.out_proj.weight": (w, w), f"{b}.attn.out_proj.bias": (w,),
            f"{b}.ln_2.weight": (w,), f"{b}.ln_2.bias": (w,),
            f"{b}.mlp.c_fc.weight": (hidden, w), f"{b}.mlp.c_fc.bias": (hidden,),
            f"{b}.mlp.c_proj.weight": (w, hidden), f"{b}.mlp.c_proj.bias": (w,),
        })
    shapes.update({
        "encoder.ln_post.weight": (w,),
        "encoder.ln_post.bias": (w,),
        "encoder.conv_out.weight": (c, w, 1, 1),
        "encoder.conv_out.bias": (c,),
        "quantize.embedding.weight": (config.codebook_size, c),
    })
    return shapes


def _listing(names: list[str]) -> str:
    shown = ", ".join(names[:_MAX_LISTED])
    more = len(names) - _MAX_LISTED
    return shown + (f" ... and {more} more" if more > 0 else "")


def identify_foreign(names: set[str] | list[str]) -> str | None:
    """A sentence naming the kind of model a tensor-name set belongs to, when it is clearly not ours."""
    names = set(names)

    def has_suffix(suffix: str) -> bool:
        return any(n == suffix or n.endswith("." + suffix) for n in names)

    if has_suffix("head.modulation") or (has_suffix("patch_embedding.weight")
                                         and any(".self_attn." in n and "blocks." in n for n in names)):
        return ("It looks like a Wan video diffusion model (DiT), not the motion tokenizer: load it with the "
                "diffusion model loader and pick motion_encoder_latest.safetensors here.")
    if has_suffix("decoder.middle.0.residual.0.gamma") or has_suffix("encoder.conv1.weight"):
        return ("It looks like a Wan VAE, not the motion tokenizer: load it with the VAE loader and pick "
                "motion_encoder_latest.safetensors here.")
    if has_suffix("shared.weight") or any(".SelfAttention." in n for n in names):
        return ("It looks like a T5 / umT5 text encoder, not the motion tokenizer: load it with the text "
                "encoder loader and pick motion_encoder_latest.safetensors here.")
    if any(n.startswith("vision_model.") or ".vision_model." in n for n in names):
        return "It looks like a CLIP vision model, not the motion tokenizer."
    if any("lora_" in n or ".lora." in n for n in names):
        return "It looks like a LoRA, not the motion tokenizer."
    ours = "encoder.patch_embed.weight"
    if ours in names and any(n.startswith("decoder.") for n in names):
        return ("It looks like a full TiTok tokenizer (it has decoder.* tensors): initialise from it with "
                "the trainer's tokenizer.titok_path, or pick motion_encoder_latest.safetensors here.")
    prefixed = sorted(n[: -len(ours)] for n in names if n.endswith("." + ours))
    if ours not in names and prefixed:
        return (f"The motion encoder tensors are stored under the prefix '{prefixed[0]}' (a training "
                f"checkpoint?): export them without the prefix, as in motion_encoder_latest.safetensors.")
    return None


def validate_shapes(shapes: Mapping[str, tuple[int, ...]], config: MotionTokenizerConfig,
                    source: str = "motion tokenizer checkpoint") -> None:
    """Raise CheckpointError listing missing, unexpected and mis-shaped tensors vs ``config``'s schema."""
    want = expected_shapes(config)
    missing, unexpected, wrong = shape_mismatch(want, shapes)
    misshaped = [f"{k} {[int(s) for s in shapes[k]]} (expected {list(want[k])})" for k in wrong]
    if not (missing or unexpected or misshaped):
        return
    parts = [f"{source} does not match the motion tokenizer schema "
             f"(inferred: width {config.width}, {config.layers} layers, {config.num_latent_tokens} tokens, "
             f"token size {config.token_size}, codebook {config.codebook_size})."]
    foreign = identify_foreign(list(shapes))
    if foreign:
        parts.append(foreign)
    if missing:
        parts.append(f"Missing {len(missing)} tensor(s): {_listing(missing)}.")
    if unexpected:
        parts.append(f"Unexpected {len(unexpected)} tensor(s): {_listing(unexpected)}.")
    if misshaped:
        parts.append(f"Wrong shape for {len(misshaped)} tensor(s): {_listing(misshaped)}.")
    parts.append("Select the released motion_encoder_latest.safetensors or a file saved with "
                 "MotionTokenizer.save.")
    raise CheckpointError(" ".join(parts))


def resolve_config(shapes: Mapping[str, tuple[int, ...]], yaml_config: Mapping | None,
                   source: str) -> MotionTokenizerConfig:
    """Infer the config from shapes (first checking that the file is not some other model)."""
    foreign = identify_foreign(list(shapes))
    if foreign and "encoder.patch_embed.weight" not in shapes:
        raise CheckpointError(f"{source} is not a motion tokenizer. {foreign}")
    try:
        config = infer_config(shapes, yaml_config)
    except CheckpointError as err:
        if foreign:
            raise CheckpointError(f"{source} is not a motion tokenizer. {foreign}") from err
        raise CheckpointError(f"{source}: {err}") from err
    validate_shapes(shapes, config, source)
    if config.num_latent_tokens != RELEASED_NUM_LATENT_TOKENS:
        log.warning("%s has %d motion tokens per frame; the released IM-Animation encoder has %d. Models "
                    "trained on 32 tokens will not accept these.", source, config.num_latent_tokens,
                    RELEASED_NUM_LATENT_TOKENS)
    return config


def _default_dtype(device: torch.device, stored: torch.dtype) -> torch.dtype:
    return torch.float32 if device.type == "cpu" else stored


def _check_finite(state_dict: Mapping[str, torch.Tensor], source: str) -> None:
    bad = [k for k, t in state_dict.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        raise CheckpointError(f"{source} has NaN or infinite values in {len(bad)} tensor(s): "
                              f"{_listing(bad)}. The file is damaged; download it again.")


def build_from_state_dict(cls: type[Tokenizer], state_dict: Mapping[str, torch.Tensor],
                          config: MotionTokenizerConfig | None = None,
                          device: torch.device | str | None = None,
                          dtype: torch.dtype | None = None, source: str = "motion tokenizer state dict",
                          copy: bool = True) -> Tokenizer:
    """Strictly build a tokenizer from released-name tensors; sizes inferred unless ``config`` is given.

    device: default CPU. dtype: default float32 on CPU, the tensors' dtype elsewhere. copy: copy tensors
    that would otherwise be shared with ``state_dict``. Raises CheckpointError naming what differs.
    """
    shapes = {k: tuple(v.shape) for k, v in state_dict.items()}
    if config is None:
        config = resolve_config(shapes, None, source)
    else:
        validate_shapes(shapes, config, source)
    _check_finite(state_dict, source)
    device = torch.device(device) if device is not None else torch.device("cpu")
    stored = state_dict["latent_tokens"].dtype
    dtype = dtype or _default_dtype(device, stored)
    tensors = {k: v.to(device=device, dtype=dtype if v.is_floating_point() else v.dtype, copy=copy)
               for k, v in state_dict.items()}
    with torch.device("meta"):
        model = cls(config)
    model.load_state_dict(tensors, strict=True, assign=True)
    return model.eval()


def inspect_safetensors(path: Path) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape of a safetensors file, without reading the tensors."""
    if not path.is_file():
        raise CheckpointError(f"motion tokenizer file '{path}' does not exist. Put "
                              f"motion_encoder_latest.safetensors in the models folder and select it.")
    with open(path, "rb") as handle:
        head = handle.read(8)
    if head[:2] == b"PK" or head[:1] == b"\x80":
        raise CheckpointError(f"motion tokenizer file '{path}' is a PyTorch pickle, not safetensors. The "
                              f"loader reads only .safetensors (the released "
                              f"motion_encoder_latest.safetensors); for the TiTok .bin use "
                              f"the trainer's tokenizer.titok_path.")
    try:
        return header(path, "motion tokenizer")[1]
    except CheckpointError as err:
        size = path.stat().st_size
        raise CheckpointError(f"motion tokenizer file '{path}' ({size:,} bytes) is not a readable "
                              f"safetensors file ({err.__cause__}). It is probably truncated or damaged (the "
                              f"released file has 607,017,208 bytes): download it again.") from err.__cause__


def _is_tokenizer(path: Path) -> bool:
    try:
        shapes = header(path, "motion tokenizer")[1]
    except CheckpointError:
        return False
    return "encoder.patch_embed.weight" in shapes and "quantize.embedding.weight" in shapes


def _config_beside(path: Path, shapes: Mapping[str, tuple[int, ...]], source: str) -> MotionTokenizerConfig:
    """The config of a weights file from the yaml beside it.

    ``<weights name>.yaml`` belongs to that file alone and is always applied. The plain ``config.yaml`` (the
    name the released encoder ships with) is shared by every file in the folder, so it applies only where it
    fits: when this is the folder's sole tokenizer its errors are reported; otherwise a config.yaml whose
    sizes disagree with these weights belongs to another tokenizer and is passed over with a log line."""
    own = path.with_suffix(".yaml")
    if own.is_file():
        try:
            return resolve_config(shapes, read_config_yaml(own), source)
        except CheckpointError as err:  # the messages name the usual file; point at this one
            raise CheckpointError(str(err).replace("config.yaml", own.name)) from None
    shared = path.parent / "config.yaml"
    if not shared.is_file():
        return resolve_config(shapes, None, source)
    try:
        return resolve_config(shapes, read_config_yaml(shared), source)
    except CheckpointError:
        others = [p for p in path.parent.glob("*.safetensors") if p.resolve() != path.resolve() and _is_tokenizer(p)]
        if not others:
            raise
        log.info("%s: config.yaml in its folder does not fit these weights (it belongs to another tokenizer "
                 "there); sizes are read from the weights. Put a %s beside this file to set them.", source,
                 own.name)
        return resolve_config(shapes, None, source)


def load_motion_tokenizer(cls: type[Tokenizer], path: str | Path, config_path: str | Path | None = None,
                          device: torch.device | str | None = None,
                          dtype: torch.dtype | None = None) -> Tokenizer:
    """Implementation of :meth:`MotionTokenizer.from_file`."""
    path = Path(path)
    source = f"motion tokenizer file '{path.name}'"
    shapes = inspect_safetensors(path)
    if config_path is None:
        config = _config_beside(path, shapes, source)
    else:
        config = resolve_config(shapes, read_config_yaml(config_path), source)
    device = torch.device(device) if device is not None else torch.device("cpu")
    chosen: list[torch.dtype] = []

    def pick_dtype(_meta, _shapes, dtypes: dict[str, str]) -> None:
        chosen.append(dtype or _default_dtype(device, TORCH_DTYPES.get(dtypes["latent_tokens"], torch.float32)))

    def convert(tensor: torch.Tensor) -> torch.Tensor:
        return tensor.to(device=device, dtype=chosen[0] if tensor.is_floating_point() else None)

    try:
        _, tensors = read_checked(path, "motion tokenizer", pick_dtype, convert=convert)
    except CheckpointError as err:
        raise CheckpointError(f"{source}: reading the tensors failed ({err.__cause__}); the file is damaged, "
                              f"download it again.") from err.__cause__
    dtype = chosen[0]
    return build_from_state_dict(cls, tensors, config=config, device=device, dtype=dtype, source=source,
                                 copy=False)


def save_motion_tokenizer(model: nn.Module, path: str | Path, dtype: torch.dtype | None = torch.float16,
                          write_config: bool = False) -> None:
    """Write ``model`` in the released format (see :meth:`MotionTokenizer.save`)."""
    from safetensors.torch import save_file

    path = Path(path)
    tensors = {}
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach()
        if dtype is not None and tensor.is_floating_point():
            tensor = tensor.to(dtype)
        tensors[name] = tensor.cpu().contiguous()
    save_file(tensors, str(path), metadata={"format": "pt"})
    if write_config:
        (path.parent / "config.yaml").write_text(config_yaml_text(model.config), encoding="utf-8")


def config_yaml_text(config: MotionTokenizerConfig) -> str:
    """A config.yaml in the released layout describing ``config``."""
    lines = ["model:", "  vq_model:",
             f"    codebook_size: {config.codebook_size}",
             f"    token_size: {config.token_size}",
             f"    use_l2_norm: {str(config.use_l2_norm).lower()}",
             "    commitment_cost: 0.25"]
    if config.model_size is not None:
        lines.append(f"    vit_enc_model_size: {config.model_size}")
    lines += [f"    vit_enc_patch_size: {config.patch_size}",
              f"    num_latent_tokens: {config.num_latent_tokens}",
              "    quantize_mode: vq",
              "    is_legacy: true",
              "dataset:", "  preprocessing:",
              f"    height_size: {config.image_size}",
              f"    width_size: {config.image_size}"]
    return "\n".join(lines) + "\n"
