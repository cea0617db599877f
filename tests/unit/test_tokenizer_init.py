"""train.tokenizer_init: a fresh tokenizer whose latent tokens attend to their own patch neighbourhood."""

import pytest
import torch
import torch.nn.functional as F
from einops import rearrange

from im_animation_core.tokenizer import MotionTokenizer, MotionTokenizerConfig
from im_animation_core.train.tokenizer_init import latent_grid, tokenizer_local_attention_init_

CFG = MotionTokenizerConfig(width=64, layers=2, heads=2, image_size=64, patch_size=8, patch_padding=(0, 0),
                            codebook_size=16, num_latent_tokens=8)


def first_block_attention(tok: MotionTokenizer, pixels: torch.Tensor) -> torch.Tensor:
    """[N,heads,L,P] attention of the latent queries over the patches in block 0."""
    e = tok.encoder
    n = pixels.shape[0]
    x = rearrange(e.patch_embed(pixels), "n w gh gw -> n (gh gw) w")
    x = torch.cat([e.class_embedding.expand(n, -1, -1), x], 1) + e.positional_embedding
    x = torch.cat([x, (tok.latent_tokens + e.latent_token_positional_embedding).expand(n, -1, -1)], 1)
    h = e.transformer[0].ln_1(e.ln_pre(x))
    w = e.transformer[0].attn.in_proj_weight
    width = h.shape[-1]
    q, k = (rearrange(h @ w[i * width:(i + 1) * width].T, "n s (h d) -> n h s d", h=tok.config.heads) for i in (0, 1))
    a = torch.softmax(q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5, -1)
    num_patches = tok.config.num_patches
    return a[:, :, -tok.config.num_latent_tokens:, 1:1 + num_patches]


def test_latent_tokens_look_at_their_own_patches(one_thread):
    torch.manual_seed(0)
    tok = tokenizer_local_attention_init_(MotionTokenizer(CFG)).eval()
    attn = first_block_attention(tok, torch.rand(3, 3, 64, 64))
    gh, gw = CFG.grid_size
    centres = latent_grid(CFG.num_latent_tokens, (gh, gw))  # patch units about the grid centre
    patch_xy = torch.stack(torch.meshgrid(torch.arange(gw) - (gw - 1) / 2, torch.arange(gh) - (gh - 1) / 2,
                                          indexing="xy"), -1).reshape(-1, 2)
    dist = torch.cdist(centres, patch_xy)  # [L,P]
    best = attn.argmax(-1)  # [N,heads,L]
    chosen = dist.gather(1, best.flatten(0, 1).T).T  # distance of the chosen patch, [N*heads, L]
    assert torch.allclose(chosen, dist.min(1).values.expand_as(chosen))
    assert attn.max(-1).values.mean() > 0.2  # local, not uniform (1/16)
    assert attn.sum(-1).mean() > 0.9  # the latent queries read patches, not each other


def test_frames_get_different_tokens_and_the_schema_is_unchanged(one_thread):
    torch.manual_seed(0)
    fresh = MotionTokenizer(CFG)
    keys = {k: v.shape for k, v in fresh.state_dict().items()}
    frames = torch.rand(4, 3, 64, 64)
    before = F.normalize(fresh.encode_latents(frames).float(), dim=-1)
    tok = tokenizer_local_attention_init_(fresh)
    assert {k: v.shape for k, v in tok.state_dict().items()} == keys
    after = F.normalize(tok.encode_latents(frames).float(), dim=-1)
    spread = lambda z: z.std(0).mean().item()  # noqa: E731  (spread of the tokens across frames)
    assert spread(after) > 10 * spread(before)


def test_too_narrow_heads_are_refused():
    with pytest.raises(ValueError, match="heads"):
        tokenizer_local_attention_init_(MotionTokenizer(MotionTokenizerConfig(width=8, layers=1, heads=4, image_size=32,
                                                                     patch_size=8, patch_padding=(0, 0),
                                                                     codebook_size=4)))
