"""The retargeter's local init (im_animation_core/train/retarget_init.py): mask tokens start out reading their own
time and place, and only parameter values change."""

import pytest
import torch

from im_animation_core.frames import latent_frame_times
from im_animation_core.retarget import RetargetConfig, RetargetTransformer
from im_animation_core.train.retarget_init import retarget_local_attention_init_


def _attention(rt, tokens, ref):
    t = tokens.shape[1]
    m, r, pos, tm = rt.embed(tokens, torch.arange(t, dtype=torch.float32), ref, latent_frame_times(t))
    context, queries = rt.tokens(m, r, pos, tm)
    x = rt.blocks[0].norm1(torch.cat([context, queries], 1))
    attn, width, heads = rt.blocks[0].attn, rt.config.width, rt.config.heads
    q = attn.q(x).unflatten(-1, (heads, -1)).transpose(1, 2)
    k = attn.kv(x)[..., :width].unflatten(-1, (heads, -1)).transpose(1, 2)
    return (q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5).softmax(-1), m.shape[1], r.shape[1]


def test_local_init_sends_mask_tokens_to_their_frames_and_their_patch():
    torch.manual_seed(0)
    rt = RetargetTransformer(RetargetConfig(latent_channels=16, width=128, depth=2, heads=2, out_channels=4,
                                            heatmap_channels=16))
    tokens = torch.nn.functional.normalize(torch.randn(4, 17, 32, 12), dim=-1)  # unit-norm codes, as the codebook
    ref = torch.randn(4, 16, 8, 8)
    before = {k: v.clone() for k, v in rt.state_dict().items()}
    retarget_local_attention_init_(rt, tokens, ref)
    assert rt.state_dict().keys() == before.keys()
    assert all(rt.state_dict()[k].shape == v.shape for k, v in before.items())
    with torch.no_grad():
        att, nm, patches = _attention(rt, tokens, ref)
    masks = att[:, :, nm + patches:]  # [B,heads,F*P,L] rows of the mask tokens
    # Head 0: of the attention a mask token pays to motion tokens, most goes to the driving frames within two
    # frames of its latent frame's centre (a uniform spread would put about 4.5 / 17 there).
    times = latent_frame_times(17)
    per_frame = masks[:, 0, :, :nm].unflatten(-1, (17, 32)).sum(-1).unflatten(1, (5, patches))  # [B,F,P,T]
    near = (torch.arange(17)[None] - times[:, None]).abs() <= 2  # [F,T]
    share = (per_frame * near[None, :, None]).sum(-1) / per_frame.sum(-1)
    assert share.mean() > 0.7, share.mean()
    own = torch.stack([masks[:, 1, f * patches + p, nm + p] for f in range(5) for p in range(patches)])
    assert own.mean() > 0.3, own.mean()  # head 1: a uniform spread would give 1/16
    with pytest.raises(ValueError, match="heads"):
        retarget_local_attention_init_(RetargetTransformer(RetargetConfig(latent_channels=16, width=64, depth=1,
                                                                       heads=1, out_channels=4)), tokens, ref)
