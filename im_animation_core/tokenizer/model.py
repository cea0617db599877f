"""The motion tokenizer: released IM-Animation motion encoder (ViT + latent tokens) and VQ codebook.

Parameter names are exactly those of the released ``motion_encoder_latest.safetensors``, so a
``state_dict()`` of this module is that file's schema. Inference (no autograd) runs batch-first tokens
through fused q/k/v projections, ``scaled_dot_product_attention`` and GEMMs with GELU / residual adds fused
in or done in place, computes only the latent positions in the last block, uses no activation
checkpointing, runs in the module's dtype and does the codebook search in float32. On the CPU in float32
each GEMM shape runs the kernel (oneDNN's or F.linear's) timed fastest on the machine
(:mod:`.linear_kernels`). With autograd on, the same modules run an unfused, differentiable forward (for
training).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ..errors import InputError
from . import linear_kernels
from .checkpoint import build_from_state_dict, load_motion_tokenizer, save_motion_tokenizer
from .config import MotionTokenizerConfig
from .linear_kernels import onednn_linear_available as onednn_linear_available

# Without autograd, blocks run fused inference kernels (see ``fused_linear``) and reuse the residual stream.
# Tests switch these off to compare the code paths. USE_ONEDNN = False keeps oneDNN's kernels out entirely;
# with it on, ``linear_kernels`` picks oneDNN or F.linear per shape by timing (or as IMA_LINEAR_KERNEL forces).
FUSED_INFERENCE = True
USE_ONEDNN = True


def _kernel(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, epilogue: str,
            residual: torch.Tensor | None = None) -> str:
    if USE_ONEDNN and x.device.type == "cpu" and x.dtype == torch.float32:
        return linear_kernels.kernel_for(x, weight, bias, epilogue, residual)
    return "aten"


def fused_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                 gelu: bool = False) -> torch.Tensor:
    """Inference-only ``F.linear`` over the last dimension, optionally followed by exact GELU.

    On the CPU in float32 the faster of oneDNN's linear with GELU fused and F.linear + in-place GELU on this
    machine (:func:`linear_kernels.kernel_for`); elsewhere the latter. No autograd.
    """
    epilogue = "gelu" if gelu else "none"
    kernel = _kernel(x, weight, bias, epilogue)
    return linear_kernels.run_kernel(kernel, x, weight, bias, epilogue, None)


def fused_linear_add(x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor,
                     bias: torch.Tensor) -> torch.Tensor:
    """Inference-only ``residual + F.linear(x, weight, bias)``; may overwrite ``residual``'s storage.

    x [...,K], residual [...,W]. On the CPU in float32 the faster of oneDNN's linear with a fused add and
    one in-place GEMM that accumulates into the (contiguous) residual; elsewhere the latter. No autograd.
    """
    residual = residual.contiguous()
    kernel = _kernel(x, weight, bias, "add", residual)
    return linear_kernels.run_kernel(kernel, x, weight, bias, "add", residual)


@dataclass
class MotionEncoding:
    """Motion tokens of N frames.

    tokens: [N,L,C] float32, the chosen codebook rows (l2-normalised when the config says so), token-first
        (the released encoder returns the same values as [N,C,1,L]). Under autograd they carry the
        straight-through gradient of ``latents``.
    indices: [N,L] int64 codebook indices in [0, codebook_size).
    latents: [N,L,C] float32, the encoder output before quantisation (l2-normalised when the config says
        so); what a commitment loss compares ``tokens`` with.
    """

    tokens: torch.Tensor
    indices: torch.Tensor
    latents: torch.Tensor

    def released_layout(self) -> torch.Tensor:
        """``tokens`` as the released encoder returns them: [N,C,1,L]."""
        return rearrange(self.tokens, "n l c -> n c 1 l")


class SelfAttention(nn.Module):
    """Multi-head self-attention with the parameter layout of ``nn.MultiheadAttention``.

    in_proj_weight [3W,W] holds the q, k, v projections in that order; scale 1/sqrt(head_dim).
    """

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * width))
        self.out_proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, query_last: int | None = None) -> torch.Tensor:
        """x [N,S,W] -> [N,S,W], or [N,query_last,W] when only the last ``query_last`` positions are queried
        (keys and values still come from all S positions)."""
        return self.out_proj(self.attend(x, query_last))

    def attend(self, x: torch.Tensor, query_last: int | None = None, fused: bool = False) -> torch.Tensor:
        """The attention output before ``out_proj``, heads merged: [N,S,W] (or [N,query_last,W]).

        fused: project q/k/v with :func:`fused_linear` (inference only).
        """
        linear = fused_linear if fused else F.linear
        width = x.shape[-1]
        if query_last is None:
            qkv = linear(x, self.in_proj_weight, self.in_proj_bias)
            q, k, v = rearrange(qkv, "n s (three h d) -> three n h s d", three=3, h=self.heads).unbind(0)
        else:
            kv = linear(x, self.in_proj_weight[width:], self.in_proj_bias[width:])
            k, v = rearrange(kv, "n s (two h d) -> two n h s d", two=2, h=self.heads).unbind(0)
            q = linear(x[:, -query_last:], self.in_proj_weight[:width], self.in_proj_bias[:width])
            q = rearrange(q, "n s (h d) -> n h s d", h=self.heads)
        out = F.scaled_dot_product_attention(q, k, v)
        return rearrange(out, "n h s d -> n s (h d)")


class Mlp(nn.Module):
    """c_fc -> exact GELU -> c_proj."""

    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.c_fc = nn.Linear(width, hidden)
        self.c_proj = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(F.gelu(self.c_fc(x)))


class ResidualAttentionBlock(nn.Module):
    """Pre-LN transformer block: x += attn(ln_1(x)); x += mlp(ln_2(x))."""

    def __init__(self, width: int, heads: int, mlp_ratio: int) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        self.attn = SelfAttention(width, heads)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = Mlp(width, width * mlp_ratio)

    def forward(self, x: torch.Tensor, keep_last: int | None = None, fused: bool = False) -> torch.Tensor:
        """x [N,S,W] -> [N,S,W], or only the last ``keep_last`` positions [N,keep_last,W].

        fused: inference kernels (:func:`fused_linear`, :func:`fused_linear_add`) that fuse GELU and the
        residual adds into the GEMMs and may overwrite ``x``; no autograd.
        """
        if not fused:
            if keep_last is None:
                x = x + self.attn(self.ln_1(x))
            else:
                x = x[:, -keep_last:] + self.attn(self.ln_1(x), query_last=keep_last)
            return x + self.mlp(self.ln_2(x))
        heads = self.attn.attend(self.ln_1(x), query_last=keep_last, fused=True)
        if keep_last is not None:
            x = x[:, -keep_last:]
        proj = self.attn.out_proj
        x = fused_linear_add(heads, x, proj.weight, proj.bias)
        mlp = self.mlp
        hidden = fused_linear(self.ln_2(x), mlp.c_fc.weight, mlp.c_fc.bias, gelu=True)
        return fused_linear_add(hidden, x, mlp.c_proj.weight, mlp.c_proj.bias)


class MotionEncoder(nn.Module):
    """ViT over padded 16x16 patches plus learnable latent tokens; outputs one C-vector per latent token."""

    def __init__(self, config: MotionTokenizerConfig) -> None:
        super().__init__()
        self.config = config
        width = config.width
        self.patch_embed = nn.Conv2d(3, width, kernel_size=config.patch_size, stride=config.patch_size,
                                     padding=config.patch_padding)
        self.class_embedding = nn.Parameter(torch.empty(1, width))
        self.positional_embedding = nn.Parameter(torch.empty(1 + config.num_patches, width))
        self.latent_token_positional_embedding = nn.Parameter(torch.empty(config.num_latent_tokens, width))
        self.ln_pre = nn.LayerNorm(width)
        self.transformer = nn.ModuleList(
            ResidualAttentionBlock(width, config.heads, config.mlp_ratio) for _ in range(config.layers))
        self.ln_post = nn.LayerNorm(width)
        self.conv_out = nn.Conv2d(width, config.token_size, kernel_size=1)

    def forward(self, pixels: torch.Tensor, latent_tokens: torch.Tensor) -> torch.Tensor:
        """pixels [N,3,S,S] (S = image_size, RGB in [0,1], module dtype), latent_tokens [L,W] -> [N,L,C].

        The result is the released encoder's [N,C,1,L] output rearranged token-first. Without autograd the
        blocks use the fused inference kernels.
        """
        fused = FUSED_INFERENCE and not torch.is_grad_enabled()
        n = pixels.shape[0]
        num_latent = latent_tokens.shape[0]
        x = rearrange(self.patch_embed(pixels), "n w gh gw -> n (gh gw) w")
        cls = self.class_embedding.to(x.dtype).expand(n, -1, -1)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding.to(x.dtype)
        latent = (latent_tokens + self.latent_token_positional_embedding).to(x.dtype)
        x = torch.cat([x, latent.expand(n, -1, -1)], dim=1)
        x = self.ln_pre(x)
        for block in self.transformer[:-1]:
            x = block(x, fused=fused)
        # Only the latent positions are kept after the last block, so only they need to be computed there.
        x = self.transformer[-1](x, keep_last=num_latent, fused=fused)
        x = self.ln_post(x)
        x = legacy_reshape(x)
        z = self.conv_out(x)  # [N,C,L,1]
        return rearrange(z, "n c l 1 -> n l c")


def legacy_reshape(x: torch.Tensor) -> torch.Tensor:
    """The released ("is_legacy") token reshape: [N,L,W] -> [N,W,L,1] by a plain row-major reshape.

    It is deliberately NOT a transpose: element (n, l, w) lands at flat position l*W + w of the frame,
    which the reshape reads back as (w', l') = divmod(l*W + w, L). conv_out was trained on this layout.
    """
    n, length, width = x.shape
    flat = rearrange(x, "n l w -> n (l w)")
    return rearrange(flat, "n (w l one) -> n w l one", w=width, l=length, one=1)


class VectorQuantizer(nn.Module):
    """Nearest-codebook-row quantiser; ``embedding.weight`` [K,C] is the codebook."""

    def __init__(self, codebook_size: int, token_size: int, use_l2_norm: bool = True) -> None:
        super().__init__()
        self.use_l2_norm = use_l2_norm
        self.embedding = nn.Embedding(codebook_size, token_size)

    def forward(self, z: torch.Tensor) -> MotionEncoding:
        """z [N,L,C] any float dtype -> MotionEncoding (float32), squared distances computed in float32."""
        n, length, channels = z.shape
        z = z.float()
        codebook = self.embedding.weight.float()
        if self.use_l2_norm:
            z = F.normalize(z, dim=-1)
            codebook = F.normalize(codebook, dim=-1)
        flat = rearrange(z, "n l c -> (n l) c")
        # |z|^2 + |e|^2 - 2 z.e, the same expansion as the released quantiser.
        dist = torch.addmm(codebook.square().sum(dim=1)[None, :], flat, codebook.t(), beta=1.0, alpha=-2.0)
        dist = dist + flat.square().sum(dim=1, keepdim=True)
        indices = rearrange(dist.argmin(dim=1), "(n l) -> n l", n=n)
        tokens = codebook[indices]
        if torch.is_grad_enabled() and z.requires_grad:
            tokens = z + (tokens - z).detach()
        return MotionEncoding(tokens=tokens, indices=indices, latents=z)


class MotionTokenizer(nn.Module):
    """Motion encoder + codebook of IM-Animation; ``state_dict()`` keys are the released names.

    Build with :meth:`from_file` (released safetensors + optional config.yaml), :meth:`from_state_dict`,
    ``train.titok.tokenizer_from_titok`` (Stage 1 initialisation) or ``MotionTokenizer(config)`` (random
    weights).
    """

    def __init__(self, config: MotionTokenizerConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = MotionEncoder(config)
        self.latent_tokens = nn.Parameter(torch.empty(config.num_latent_tokens, config.width))
        self.quantize = VectorQuantizer(config.codebook_size, config.token_size, config.use_l2_norm)
        if not any(p.is_meta for p in self.parameters()):
            self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """TiTok-style random init: embeddings ~ N(0, W^-1/2), linear/conv ~ N(0, 0.02), LayerNorm 1/0,
        codebook ~ U(-1/K, 1/K)."""
        scale = self.config.width ** -0.5
        for name, param in self.named_parameters():
            if name.endswith(("class_embedding", "positional_embedding", "latent_tokens")):
                param.copy_(torch.randn(param.shape, generator=generator) * scale)
            elif name == "quantize.embedding.weight":
                k = self.config.codebook_size
                param.copy_(torch.rand(param.shape, generator=generator) * (2.0 / k) - 1.0 / k)
            elif ".ln_" in name or name.startswith("encoder.ln_"):
                param.fill_(1.0 if name.endswith("weight") else 0.0)
            elif name.endswith("bias"):
                param.zero_()
            else:
                param.copy_(torch.randn(param.shape, generator=generator).clamp_(-2, 2) * 0.02)

    # ---- properties ----------------------------------------------------------------------------------
    # No ``device``/``dtype`` properties: ComfyUI's ModelPatcher assigns ``model.device`` itself.
    @property
    def param_device(self) -> torch.device:
        return self.latent_tokens.device

    @property
    def param_dtype(self) -> torch.dtype:
        return self.latent_tokens.dtype

    def summary(self) -> str:
        """One line describing the sizes, for logs and node outputs."""
        c = self.config
        size = c.model_size or "custom"
        return (f"motion tokenizer {size}: width {c.width}, {c.layers} layers, {c.heads} heads, "
                f"{c.num_latent_tokens} tokens x {c.token_size} ch, codebook {c.codebook_size}, "
                f"{self.param_dtype} on {self.param_device}")

    # ---- forward -------------------------------------------------------------------------------------
    def check_pixels(self, pixels: torch.Tensor) -> None:
        """Raise InputError unless pixels is a float [N,3,S,S] tensor with S = config.image_size, N >= 1."""
        size = self.config.image_size
        if not isinstance(pixels, torch.Tensor):
            raise InputError(f"motion tokenizer input must be a tensor, got {type(pixels).__name__}.")
        if pixels.ndim != 4 or pixels.shape[1] != 3 or tuple(pixels.shape[2:]) != (size, size):
            raise InputError(f"motion tokenizer input must have shape [N,3,{size},{size}], got "
                             f"{list(pixels.shape)}. Run preprocess_frames on [N,H,W,3] frames first.")
        if pixels.shape[0] == 0:
            raise InputError("motion tokenizer input is an empty batch: give at least one frame.")
        if not pixels.is_floating_point():
            raise InputError(f"motion tokenizer input must be float RGB in [0,1], got {pixels.dtype}.")

    def encode_latents(self, pixels: torch.Tensor) -> torch.Tensor:
        """pixels [N,3,S,S] float RGB in [0,1] -> unquantised encoder output [N,L,C] in the module dtype."""
        self.check_pixels(pixels)
        pixels = pixels.to(device=self.param_device, dtype=self.param_dtype)
        return self.encoder(pixels, self.latent_tokens)

    def forward(self, pixels: torch.Tensor) -> MotionEncoding:
        """pixels [N,3,S,S] float RGB in [0,1] (S = 256 released) -> MotionEncoding (float32 tokens).

        Differentiable (straight-through tokens) when autograd is on; use :meth:`encode` for inference.
        """
        return self.quantize(self.encode_latents(pixels))

    def encode(self, pixels: torch.Tensor) -> MotionEncoding:
        """Inference: pixels [N,3,S,S] float RGB in [0,1], no mean/std normalisation -> MotionEncoding with
        tokens [N,L,C] float32 and indices [N,L] int64, on the module's device. Runs under inference_mode."""
        with torch.inference_mode():
            return self(pixels)

    # ---- construction / serialisation (implemented in checkpoint.py) ------------------------------------
    @classmethod
    def from_state_dict(cls, state_dict: Mapping[str, torch.Tensor],
                        config: MotionTokenizerConfig | None = None,
                        device: torch.device | str | None = None,
                        dtype: torch.dtype | None = None) -> MotionTokenizer:
        """Build from a state dict with the released names; strict (see checkpoint.build_from_state_dict)."""
        return build_from_state_dict(cls, state_dict, config=config, device=device, dtype=dtype)

    @classmethod
    def from_file(cls, path: str | Path, config_path: str | Path | None = None,
                  device: torch.device | str | None = None,
                  dtype: torch.dtype | None = None) -> MotionTokenizer:
        """Load the released ``motion_encoder_latest.safetensors`` (or any file of that schema).

        config_path: a config.yaml; by default ``<file name>.yaml`` beside the file, else the folder's
        ``config.yaml`` when it fits these weights or this is the folder's only tokenizer.
        device: default CPU. dtype: default float32 on CPU, the file's dtype elsewhere.
        Raises CheckpointError naming what differs for a wrong, truncated or mis-shaped file.
        """
        return load_motion_tokenizer(cls, path, config_path=config_path, device=device, dtype=dtype)

    def save(self, path: str | Path, dtype: torch.dtype | None = torch.float16,
             write_config: bool = False) -> None:
        """Write the released format: safetensors with the released tensor names, floats cast to ``dtype``
        (float16 released; None keeps them). write_config: also write config.yaml beside the file."""
        save_motion_tokenizer(self, path, dtype=dtype, write_config=write_config)
