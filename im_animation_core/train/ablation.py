"""The retargeting ablation of Table 6 / Table 2 exp. C.

SelfAttentionRetarget: the same parameters as RetargetTransformer (so IMAnimationModules' file format is
unchanged), but no mask tokens: the sequence is the motion tokens followed by the identity's reference
tokens, one copy per output latent frame (each copy carrying its latent frame's time embedding), and the
output is read from those reference-token positions. The identity's own pose therefore reaches the output
directly instead of through a learned bottleneck, which is what the paper ablates.

Modules files of the ablation carry the extra metadata key ``im_animation_retarget = self_attention``;
``modules_file.load_modules`` restores the matching forward (``IMAnimationModules.from_file`` refuses such
files).
"""

from __future__ import annotations

from einops import rearrange

from ..retarget import RetargetTransformer


class SelfAttentionRetarget(RetargetTransformer):
    """Self-attention retargeting without mask tokens (see the module docstring). Same call signature and
    outputs as RetargetTransformer.forward; ``mask_token`` exists (same file format) but is unused."""

    def tokens(self, m, ref, pos, time):
        """No mask tokens: the reference tokens themselves, one copy per latent frame with its time, are the
        queries; the motion tokens are the context."""
        return m, rearrange(ref[:, None] + time[None, :, None], "b f n d -> b (f n) d")
