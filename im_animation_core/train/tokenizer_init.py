"""A from-scratch initialisation of the motion tokenizer whose latent tokens look at places from step 0.

Why. The paper's Stage 1 starts from a trained TiTok encoder. From random weights (TiTok's own init:
N(0, 0.02) projections) every latent token attends almost uniformly to all patches, its output is dominated
by its own learned embedding, and the 32 tokens of two different frames agree to cosine 0.9999: nothing
about where the body is reaches the heads. Stage 1 on the 64-pixel synthetic data then sits at the
predict-the-mean heatmap loss for hundreds of steps (observed with TiTok, Xavier and zeroed-latent inits,
lr 1e-4 to 3e-3, sigma 2 and 4, with and without a variance regulariser), while a conv encoder with the
same head leaves that plateau within ~100 steps.

What. Only the *values* of existing parameters are set; the architecture and the released key names are
unchanged, so a tokenizer trained from this init is a normal tokenizer file. In the first block, latent
token l queries with a code of its grid centre c_l and patch p answers with a code of its centre, built so
that the attention logit is proportional to -|c_l - p|^2 / 2 (patch units) up to a per-query constant, with a
factor that grows as sharpness^2:

    query code  [c_x, c_y, 1]                    (channels 0-2, balanced by channel 7 to zero mean)
    key code    [p_x, p_y, -|p|^2/2, r_p]        (channels 3-6, balanced by channel 8; r_p pads every key
                                                  code to the same norm so LayerNorm scales all alike)

The values read only the content channels (9+), the patch embedding is zero-mean across its output
channels (so LayerNorm's mean subtraction does not move the codes), and the latent token's own code is
shrunk by ln_pre's gain so that what it gathered, not what it is, dominates its output. Later blocks keep
TiTok's small init (near-identity residual blocks) and learn from there. The codebook is untouched: the
quantiser warm-up (train.config.TokenizerInit.quantize_warmup_steps) re-draws it once the tokens mean
something.
"""

from __future__ import annotations

import math

import torch

from ..tokenizer.model import MotionTokenizer

QUERY_CHANNELS = (0, 1, 2)
KEY_CHANNELS = (3, 4, 5, 6)
QUERY_BALANCE, KEY_BALANCE = 7, 8
CONTENT_START = 9


def latent_grid(num_latent: int, grid: tuple[int, int]) -> torch.Tensor:
    """[L,2] (x, y) centres, in patch units about the patch grid's centre, of an lh x lw layout of the L
    latent tokens over the patch grid (lh the largest power of two <= sqrt(L) dividing L)."""
    gh, gw = grid
    lh = 2 ** int(math.floor(math.log2(num_latent) / 2))
    while num_latent % lh:
        lh //= 2
    lw = num_latent // lh
    cy, cx = torch.meshgrid((torch.arange(lh) + 0.5) * gh / lh - gh / 2, (torch.arange(lw) + 0.5) * gw / lw - gw / 2,
                            indexing="ij")
    return torch.stack([cx.flatten(), cy.flatten()], -1)


@torch.no_grad()
def tokenizer_local_attention_init_(tokenizer: MotionTokenizer, sharpness: float = 4.0, latent_gain: float = 0.05,
                          generator: torch.Generator | None = None) -> MotionTokenizer:
    """Re-initialise ``tokenizer`` in place for training from scratch (see the module docstring).

    sharpness: inverse width of each latent token's attention window, in 1/patches (4: about 40% of a
    token's attention on its nearest patch on an 8x8 grid). latent_gain: ln_pre's gain on the latent
    query code. Needs heads of >= 3 channels and width >= 16."""
    c = tokenizer.config
    enc = tokenizer.encoder
    width, heads = c.width, c.heads
    head_dim = width // heads
    if head_dim < len(QUERY_CHANNELS) or width < 16:
        raise ValueError(f"tokenizer_local_attention_init_ needs heads of >= 3 channels and width >= 16, got "
                         f"width {width}, {heads} heads")
    gh, gw = c.grid_size
    py, px = torch.meshgrid(torch.arange(gh, dtype=torch.float32) - (gh - 1) / 2,
                            torch.arange(gw, dtype=torch.float32) - (gw - 1) / 2, indexing="ij")
    p = torch.stack([px.flatten(), py.flatten()], -1)
    key = torch.cat([p, -(p ** 2).sum(-1, keepdim=True) / 2], -1)
    radius = 1.5 * key.norm(dim=-1).max()
    key = torch.cat([key, (radius ** 2 - key.pow(2).sum(-1, keepdim=True)).sqrt()], -1)
    num_latent = tokenizer.latent_tokens.shape[0]
    query = torch.cat([latent_grid(num_latent, (gh, gw)), torch.ones(num_latent, 1)], -1)

    for t in (enc.positional_embedding, enc.latent_token_positional_embedding, tokenizer.latent_tokens):
        t.zero_()
    enc.positional_embedding[1:, list(KEY_CHANNELS)] = key
    enc.positional_embedding[1:, KEY_BALANCE] = -key.sum(-1)
    enc.latent_token_positional_embedding[:, list(QUERY_CHANNELS)] = query
    enc.latent_token_positional_embedding[:, QUERY_BALANCE] = -query.sum(-1)

    enc.class_embedding[:, :CONTENT_START] = 0  # a random class token would out-bid the patches' keys
    weight = enc.patch_embed.weight
    weight.copy_(torch.randn(weight.shape, generator=generator) * math.sqrt(2.0 / weight[0].numel()))
    weight[:CONTENT_START] = 0
    weight[CONTENT_START:] -= weight[CONTENT_START:].mean(0, keepdim=True)
    enc.patch_embed.bias.zero_()
    enc.ln_pre.weight[list(QUERY_CHANNELS) + [QUERY_BALANCE]] = latent_gain

    attn = enc.transformer[0].attn
    w = attn.in_proj_weight
    w.zero_()
    attn.in_proj_bias.zero_()
    for h in range(heads):
        for i, (qc, kc) in enumerate(zip(QUERY_CHANNELS, KEY_CHANNELS[:3], strict=True)):
            w[h * head_dim + i, qc] = sharpness
            w[width + h * head_dim + i, kc] = sharpness
    w[2 * width:, CONTENT_START:] = _xavier((width, width - CONTENT_START), generator)
    attn.out_proj.weight.copy_(_xavier((width, width), generator))
    out = enc.conv_out.weight
    out.copy_(_xavier((out.shape[0], out[0].numel()), generator).view_as(out))
    return tokenizer


def _xavier(shape: tuple[int, int], generator: torch.Generator | None) -> torch.Tensor:
    bound = math.sqrt(6.0 / (shape[0] + shape[1]))
    return (torch.rand(shape, generator=generator) * 2 - 1) * bound


