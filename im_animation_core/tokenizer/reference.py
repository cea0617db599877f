"""A plain float32 evaluation of the released motion encoder, kept separate from the fast path.

Ground truth for tests and the benchmark. It follows the released semantics step by step in the layout
of ``nn.MultiheadAttention`` (sequence-first [S,N,W]; q, k, v projected separately from the three row
blocks of ``in_proj_weight``; softmax(q k^T / sqrt(d)) v materialised per head); every block computes all
S positions; the codebook search uses the released |z|^2 + |e|^2 - 2 z.e expansion. It shares no
forward code with :mod:`.model`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F

from .config import MotionTokenizerConfig


def _layer_norm(x: torch.Tensor, sd: Mapping[str, torch.Tensor], name: str) -> torch.Tensor:
    return F.layer_norm(x, (x.shape[-1],), sd[f"{name}.weight"], sd[f"{name}.bias"], eps=1e-5)


def _mha(x: torch.Tensor, sd: Mapping[str, torch.Tensor], name: str, heads: int) -> torch.Tensor:
    """x [S,N,W] -> [S,N,W], the computation of nn.MultiheadAttention without masks or dropout."""
    seq, n, width = x.shape
    head_dim = width // heads
    w_q, w_k, w_v = sd[f"{name}.in_proj_weight"].chunk(3, dim=0)
    b_q, b_k, b_v = sd[f"{name}.in_proj_bias"].chunk(3, dim=0)
    q = F.linear(x, w_q, b_q)
    k = F.linear(x, w_k, b_k)
    v = F.linear(x, w_v, b_v)
    # [S,N,W] -> [N*heads, S, head_dim]
    q = q.reshape(seq, n * heads, head_dim).transpose(0, 1)
    k = k.reshape(seq, n * heads, head_dim).transpose(0, 1)
    v = v.reshape(seq, n * heads, head_dim).transpose(0, 1)
    weights = torch.softmax(torch.bmm(q / math.sqrt(head_dim), k.transpose(1, 2)), dim=-1)
    out = torch.bmm(weights, v)  # [N*heads, S, head_dim]
    out = out.transpose(0, 1).reshape(seq, n, width)
    return F.linear(out, sd[f"{name}.out_proj.weight"], sd[f"{name}.out_proj.bias"])


@torch.no_grad()
def reference_latents(state_dict: Mapping[str, torch.Tensor], pixels: torch.Tensor,
                      config: MotionTokenizerConfig | None = None) -> torch.Tensor:
    """Released encoder output before quantisation, as released: [N,C,1,L] float32.

    state_dict: released tensor names (any float dtype, converted to float32 on the pixels' device);
    pixels: [N,3,S,S] float RGB in [0,1]; config: inferred from the shapes when None.
    """
    config = config or MotionTokenizerConfig.from_state_dict(state_dict)
    device = pixels.device
    sd = {k: v.detach().to(device=device, dtype=torch.float32) for k, v in state_dict.items()}
    x = pixels.to(torch.float32)
    n = x.shape[0]
    width = config.width
    x = F.conv2d(x, sd["encoder.patch_embed.weight"], sd["encoder.patch_embed.bias"],
                 stride=config.patch_size, padding=config.patch_padding)  # [N,W,gh,gw]
    x = x.reshape(n, width, -1).permute(0, 2, 1)  # [N,P,W]
    cls = sd["encoder.class_embedding"] + torch.zeros(n, 1, width, device=device)
    x = torch.cat([cls, x], dim=1) + sd["encoder.positional_embedding"]
    latent = sd["latent_tokens"] + sd["encoder.latent_token_positional_embedding"]
    x = torch.cat([x, latent.unsqueeze(0).repeat(n, 1, 1)], dim=1)
    x = _layer_norm(x, sd, "encoder.ln_pre")
    x = x.permute(1, 0, 2)  # [S,N,W]
    for i in range(config.layers):
        name = f"encoder.transformer.{i}"
        x = x + _mha(_layer_norm(x, sd, f"{name}.ln_1"), sd, f"{name}.attn", config.heads)
        h = _layer_norm(x, sd, f"{name}.ln_2")
        h = F.linear(h, sd[f"{name}.mlp.c_fc.weight"], sd[f"{name}.mlp.c_fc.bias"])
        h = F.gelu(h)
        x = x + F.linear(h, sd[f"{name}.mlp.c_proj.weight"], sd[f"{name}.mlp.c_proj.bias"])
    x = x.permute(1, 0, 2)  # [N,S,W]
    length = config.num_latent_tokens
    x = _layer_norm(x[:, -length:], sd, "encoder.ln_post")  # [N,L,W]
    x = x.reshape(n, width, length, 1)  # legacy: a plain reshape, not a transpose
    z = F.conv2d(x, sd["encoder.conv_out.weight"], sd["encoder.conv_out.bias"])  # [N,C,L,1]
    return z.reshape(n, config.token_size, 1, length)


@torch.no_grad()
def reference_quantize(z: torch.Tensor, codebook: torch.Tensor,
                       use_l2_norm: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """z [N,C,1,L], codebook [K,C] -> (quantised [N,C,1,L] float32, indices [N,L] int64)."""
    n, channels, _, length = z.shape
    z = z.float().permute(0, 2, 3, 1).reshape(-1, channels)  # b c h w -> (b h w) c
    codebook = codebook.float()
    if use_l2_norm:
        z = F.normalize(z, dim=-1)
        codebook = F.normalize(codebook, dim=-1)
    dist = (z ** 2).sum(dim=1, keepdim=True) + (codebook ** 2).sum(dim=1) - 2 * z @ codebook.t()
    idx = dist.argmin(dim=1)
    quantised = codebook[idx].reshape(n, 1, length, channels).permute(0, 3, 1, 2)
    return quantised, idx.reshape(n, length)


@torch.no_grad()
def reference_encode(state_dict: Mapping[str, torch.Tensor], pixels: torch.Tensor,
                     config: MotionTokenizerConfig | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Released motion encoder + quantiser in plain float32.

    Returns (tokens [N,L,C] float32 token-first, indices [N,L] int64); pixels [N,3,S,S] RGB in [0,1].
    """
    config = config or MotionTokenizerConfig.from_state_dict(state_dict)
    z = reference_latents(state_dict, pixels, config)
    quantised, indices = reference_quantize(z, state_dict["quantize.embedding.weight"].to(pixels.device),
                                            config.use_l2_norm)
    return quantised[:, :, 0, :].permute(0, 2, 1), indices
