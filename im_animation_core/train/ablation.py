"""The retargeting ablation of Table 6 / Table 2 exp. C, and modules files that remember which one they hold.

SelfAttentionRetarget: the same parameters as RetargetTransformer (so IMAnimationModules' file format is
unchanged), but no mask tokens: the sequence is the motion tokens followed by the identity's reference
tokens, one copy per output latent frame (each copy carrying its latent frame's time embedding), and the
output is read from those reference-token positions. The identity's own pose therefore reaches the output
directly instead of through a learned bottleneck, which is what the paper ablates.

Modules files of the ablation carry the extra metadata key ``im_animation_retarget = self_attention``;
``load_modules`` restores the matching forward (``IMAnimationModules.from_file`` ignores the key and gives
the mask-token forward).
"""

from __future__ import annotations

import torch
from einops import rearrange
from safetensors.torch import save_file

from ..modules import IMAnimationModules, read_modules_file
from ..retarget import RetargetTransformer

RETARGET_METADATA_KEY = "im_animation_retarget"


class SelfAttentionRetarget(RetargetTransformer):
    """Self-attention retargeting without mask tokens (see the module docstring). Same call signature and
    outputs as RetargetTransformer.forward; ``mask_token`` exists (same file format) but is unused."""

    def tokens(self, m, ref, pos, time):
        """No mask tokens: the reference tokens themselves, one copy per latent frame with its time, are the
        queries; the motion tokens are the context."""
        return m, rearrange(ref[:, None] + time[None, :, None], "b f n d -> b (f n) d")


def use_retarget_kind(modules: IMAnimationModules, kind: str) -> IMAnimationModules:
    """Switch ``modules.retarget`` to the forward of ``kind`` ("mask_tokens" / "self_attention") in place
    (same parameters, so the class is swapped without copying)."""
    cls = SelfAttentionRetarget if kind == "self_attention" else RetargetTransformer
    modules.retarget.__class__ = cls
    return modules


def retarget_kind(modules: IMAnimationModules) -> str:
    return "self_attention" if isinstance(modules.retarget, SelfAttentionRetarget) else "mask_tokens"


def save_modules(modules: IMAnimationModules, path: str, dtype: torch.dtype = torch.float32) -> None:
    """IMAnimationModules.save, plus the retarget kind in the metadata for the ablation."""
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
