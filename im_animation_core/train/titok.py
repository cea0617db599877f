"""Stage 1 initialisation from the public TiTok-L-32 tokenizer (``tokenizer_titok_l32.bin``).

That file is a torch pickle of the whole TiTok model. Its encoder, latent tokens and codebook use the
same tensor names as the released motion encoder; its decoder (``decoder.*`` and any pixel decoder) is
ignored. TiTok's patch conv has no padding; this package always applies the (4, 2) padding of the released
IM-Animation motion encoder, which was trained from TiTok weights with that padding.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import torch

from ..errors import CheckpointError
from ..tokenizer.checkpoint import build_from_state_dict, resolve_config
from ..tokenizer.model import MotionTokenizer

_OURS = ("encoder.", "quantize.")


def _is_ours(name: str) -> bool:
    return name == "latent_tokens" or name.startswith(_OURS)


def load_titok_init(path: str | Path) -> dict[str, torch.Tensor]:
    """Read the motion-encoder part of a TiTok pickle (``torch.load(..., weights_only=True)`` only).

    Returns the tensors named ``encoder.*``, ``latent_tokens`` and ``quantize.*`` (CPU, stored dtype),
    checked against the motion tokenizer schema. A ``state_dict`` / ``model`` wrapper and a DDP ``module.``
    prefix are unwrapped. Raises CheckpointError for a missing, unreadable or non-TiTok file.
    """
    path = Path(path)
    source = f"TiTok file '{path.name}'"
    if not path.is_file():
        raise CheckpointError(f"TiTok file '{path}' does not exist; download tokenizer_titok_l32.bin "
                              f"(bytedance/1d-tokenizer) and give its path.")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as err:
        raise CheckpointError(f"{source} cannot be read as a weights-only torch pickle ({err}). Give the "
                              f"original tokenizer_titok_l32.bin; it may be truncated or not a TiTok "
                              f"checkpoint.") from err
    for wrapper in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
            obj = obj[wrapper]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{source} does not hold a state dict of tensors; give "
                              f"tokenizer_titok_l32.bin.")
    if obj and all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    state = {k: v for k, v in obj.items() if _is_ours(k)}
    if "encoder.patch_embed.weight" not in state:
        raise CheckpointError(f"{source} has no TiTok encoder (no 'encoder.patch_embed.weight' among "
                              f"{len(obj)} tensors); give tokenizer_titok_l32.bin.")
    resolve_config({k: tuple(v.shape) for k, v in state.items()}, None, source)
    return state


def tokenizer_from_titok(path: str | Path, codebook_size: int | None = None,
                         device: torch.device | str | None = None, dtype: torch.dtype | None = None,
                         generator: torch.Generator | None = None) -> MotionTokenizer:
    """Stage 1 initialisation: a motion tokenizer from the public TiTok-L-32 pickle ``tokenizer_titok_l32.bin``.

    codebook_size: keep TiTok's codebook when None or equal to its size; otherwise a fresh codebook of
    that many rows, uniform in [-1/K, 1/K]. The patch conv uses padding (4, 2) as the released checkpoint
    does, although TiTok itself was trained without it. device: default CPU. dtype: default float32 on the
    CPU, the file's dtype elsewhere.
    """
    state = load_titok_init(path)
    codebook = state["quantize.embedding.weight"]
    if codebook_size is not None and int(codebook_size) != codebook.shape[0]:
        if int(codebook_size) < 1:
            raise CheckpointError(f"codebook_size must be at least 1, got {codebook_size}.")
        k = int(codebook_size)
        state["quantize.embedding.weight"] = (
            torch.rand(k, codebook.shape[1], generator=generator) * (2.0 / k) - 1.0 / k).to(codebook.dtype)
    source = f"TiTok file '{Path(path).name}'"
    return build_from_state_dict(MotionTokenizer, state, device=device, dtype=dtype, source=source)
