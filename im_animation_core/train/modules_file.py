"""The trainer's export and import of the IM-Animation modules file: IMAnimationModules' format, plus the
retargeting forward it was trained with (metadata ``im_animation_retarget``, written only for the ablation)."""

from __future__ import annotations

import torch
from safetensors.torch import save_file

from ..modules import IMAnimationModules, read_modules_file
from ..motion import TokenizerRecord
from ..retarget import RetargetTransformer
from .ablation import SelfAttentionRetarget

RETARGET_METADATA_KEY = "im_animation_retarget"


def use_retarget_kind(modules: IMAnimationModules, kind: str) -> IMAnimationModules:
    """Switch ``modules.retarget`` to the forward of ``kind`` ("mask_tokens" / "self_attention") in place
    (same parameters, so the class is swapped without copying)."""
    cls = SelfAttentionRetarget if kind == "self_attention" else RetargetTransformer
    modules.retarget.__class__ = cls
    return modules


def retarget_kind(modules: IMAnimationModules) -> str:
    return "self_attention" if isinstance(modules.retarget, SelfAttentionRetarget) else "mask_tokens"


def save_modules(modules: IMAnimationModules, path: str, dtype: torch.dtype = torch.float32,
                 tokenizer_file: str | None = None) -> None:
    """IMAnimationModules.save, plus the retarget kind in the metadata for the ablation. tokenizer_file: the
    motion tokenizer file exported with these modules, recorded in the metadata (its sizes and SHA-256) so that
    Retarget to Identity can refuse tokens of another tokenizer; None keeps the record the modules have."""
    if tokenizer_file is not None:
        modules.tokenizer_record = TokenizerRecord.of_file(tokenizer_file)
    kind = retarget_kind(modules)
    if kind == "mask_tokens":
        modules.save(path, dtype=dtype)
        return
    sd = {k: v.detach().to("cpu", dtype).contiguous() for k, v in modules.state_dict().items()}
    save_file(sd, path, metadata={**modules.metadata(), RETARGET_METADATA_KEY: kind})


def load_modules(path: str) -> IMAnimationModules:
    """IMAnimationModules.from_file, with the ablation's retarget forward when the file records it."""
    modules, meta = read_modules_file(path, allow_ablation=True)
    return use_retarget_kind(modules, meta.get(RETARGET_METADATA_KEY, "mask_tokens"))
