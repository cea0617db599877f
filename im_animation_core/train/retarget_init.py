"""A from-scratch initialisation of the retargeting transformer whose mask tokens read their own time and place
from step 0 (modules.retarget_init "local"; the retargeter's analogue of train/tokenizer_init.py).

Why. From random weights every mask token attends almost uniformly to all motion and reference tokens, so all
latent frames and patches see the same average and the heatmap loss sits at its predict-the-mean plateau
(docs/training.md). What. Only parameter values of the first block, the type embedding and the reference
projection change; the architecture and key names stay. The place code is fitted to a sample of real inputs,
so this needs the motion tokens and identity latents of a few training pairs (the trainer passes its first
pairs). It needs a patch grid no larger than a head's channels minus one: a small-model init.
"""

from __future__ import annotations

import torch

from ..frames import latent_frame_times
from ..layers import sinusoidal_frequencies
from ..retarget import RetargetTransformer


def _time_channels(width: int, lo: float = 0.12, hi: float = 1.01) -> list[int]:
    """Channels of sinusoidal_embedding(t, width) whose frequency lies in [lo, hi] rad/frame: cos then sin."""
    freqs = sinusoidal_frequencies(width)
    idx = [i for i in range(len(freqs)) if lo <= freqs[i] <= hi]
    return idx + [width // 2 + i for i in idx]


@torch.no_grad()
def retarget_local_attention_init_(rt: RetargetTransformer, tokens: torch.Tensor, ref: torch.Tensor, time_sharpness=2.0,
                          place_sharpness=10.0, ref_code=4.0, content_gain=0.3, ridge=1.0) -> RetargetTransformer:
    """Set the first block's attention so that every mask token starts out reading its own time and place.

    Head 0: the query and key of every token are its time embedding's channels of 1/8 to 1 rad/frame, so the
    logit is a sum of cos(w (t_query - t_key)): mask tokens attend to the motion tokens of the driving frames
    of their latent frame. Head 1: a type code (on the mask and reference tokens' type embeddings) sends the mask
    tokens to the reference tokens, and a linear map fitted by ridge regression on the normalised mask and
    reference tokens of a sample (tokens [B,T,N_m,C_m], ref [B,C,H,W]) sends both to a one-hot code of their
    patch, so a mask token reads the identity latent at its own patch.
    The reference content projection is scaled by content_gain so that the patch code dominates the keys.
    Only parameter values change. Needs 2 heads and head channels >= patches + 1."""
    c = rt.config
    width, head = c.width, c.width // c.heads
    patches = (ref.shape[-2] // c.patch_size) * (ref.shape[-1] // c.patch_size)
    if c.heads < 2 or head < patches + 1:
        raise ValueError(f"retarget_local_attention_init_ needs >= 2 heads of >= {patches + 1} channels, got {c.heads} "
                         f"heads of {head}")
    attn = rt.blocks[0].attn
    attn.q.weight.zero_(), attn.q.bias.zero_(), attn.kv.weight[:width].zero_(), attn.kv.bias[:width].zero_()
    for j, ch in enumerate(_time_channels(width)[:head]):
        attn.q.weight[j, ch] = time_sharpness
        attn.kv.weight[j, ch] = time_sharpness
    # The two lowest-frequency channels of the first half: ~constant for every token (cos of the time embedding,
    # sin of the grid embedding's y part), so a type code there is not drowned by position or time.
    query_ch, key_ch = width // 2 - 2, width // 2 - 1
    rt.type_embedding[:, [query_ch, key_ch]] = 0
    rt.type_embedding[2, query_ch] = ref_code
    rt.type_embedding[1, key_ch] = ref_code
    rt.ref_in.weight.mul_(content_gain)
    t = tokens.shape[1]
    m, r, pos, tm = rt.embed(tokens.float(), torch.arange(t, dtype=torch.float32), ref.float(),
                             latent_frame_times(t))
    context, queries = rt.tokens(m, r, pos, tm)
    x = rt.blocks[0].norm1(torch.cat([context, queries], 1))
    refs, masks = x[:, m.shape[1]:m.shape[1] + patches], x[:, m.shape[1] + patches:]
    xs = torch.cat([refs.reshape(-1, width), masks.reshape(-1, width)])
    ys = torch.eye(patches).repeat(xs.shape[0] // patches, 1)
    code = torch.linalg.solve(xs.T @ xs + ridge * torch.eye(width), xs.T @ ys).T  # [patches, width]
    attn.q.weight[head:head + patches] = place_sharpness * code
    attn.kv.weight[head:head + patches] = place_sharpness * code
    attn.q.weight[2 * head - 1, query_ch] = ref_code
    attn.kv.weight[2 * head - 1, key_ch] = ref_code
    return rt
