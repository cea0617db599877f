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
from safetensors import safe_open
from safetensors.torch import save_file

from ..errors import InputError
from ..layers import grid_embedding, sinusoidal_embedding
from ..modules import IMAnimationModules
from ..retarget import RetargetTransformer

RETARGET_METADATA_KEY = "im_animation_retarget"


class SelfAttentionRetarget(RetargetTransformer):
    """Self-attention retargeting without mask tokens (see the module docstring). Same call signature and
    outputs as RetargetTransformer.forward; ``mask_token`` exists (same file format) but is unused."""

    def forward(self, motion: torch.Tensor, motion_times: torch.Tensor, ref_latent: torch.Tensor,
                latent_times: torch.Tensor, return_features: bool = False):
        c = self.config
        if motion.ndim != 4 or motion.shape[2:] != (c.motion_tokens, c.motion_dim):
            raise InputError(f"motion tokens have shape {tuple(motion.shape)}; this retarget model expects "
                             f"[B,T,{c.motion_tokens},{c.motion_dim}]")
        if ref_latent.ndim != 4 or ref_latent.shape[1] != c.latent_channels:
            raise InputError(f"identity latent has shape {tuple(ref_latent.shape)}; this retarget model expects "
                             f"{c.latent_channels} latent channels")
        h, w = ref_latent.shape[-2] // c.patch_size, ref_latent.shape[-1] // c.patch_size
        f = latent_times.shape[0]
        dev = motion.device
        m = self.motion_in(motion) + self.motion_slot
        m = m + sinusoidal_embedding(motion_times.to(dev), c.width)[:, None].to(m.dtype)
        m = rearrange(m, "b t n d -> b (t n) d") + self.type_embedding[0]
        pos = grid_embedding(h, w, c.width, device=dev).to(m.dtype)
        ref = rearrange(ref_latent, "b c (h p1) (w p2) -> b (h w) (c p1 p2)", p1=c.patch_size, p2=c.patch_size)
        ref = self.ref_in(self.ref_norm(ref)) + pos + self.type_embedding[1]
        time = sinusoidal_embedding(latent_times.to(dev), c.width).to(m.dtype)
        queries = rearrange(ref[:, None] + time[None, :, None], "b f n d -> b (f n) d")
        x = torch.cat([m, queries], dim=1)
        for block in self.blocks:
            x = block(x)
        feats = self.norm_out(x[:, m.shape[1]:])
        out = rearrange(self.out(feats), "b (f h w) (c p1 p2) -> b c f (h p1) (w p2)",
                        f=f, h=h, w=w, p1=c.patch_size, p2=c.patch_size)
        if return_features:
            return out, rearrange(feats, "b (f n) d -> b f n d", f=f)
        return out


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
    modules = IMAnimationModules.from_file(path, allow_ablation=True)
    with safe_open(path, framework="pt") as f:
        kind = (f.metadata() or {}).get(RETARGET_METADATA_KEY, "mask_tokens")
    return use_retarget_kind(modules, kind)
