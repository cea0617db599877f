"""A trainable Wan-architecture DiT (the text-to-video / Wan2.2 TI2V variant) in plain PyTorch.

Parameter names and shapes are those of Wan's released checkpoints as ComfyUI's ``WanModel`` (t2v) holds
them, so a state dict moves both ways between this module and ComfyUI's stock "Load Diffusion Model".
The computation follows the same numerics (checked against ComfyUI's model in
tests/unit/test_wan_dit.py); everything, the 3D rotary embedding included, is made of differentiable torch
ops, so ``loss.backward()`` works.

Data flow (B batch, C channels, F latent frames, H x W latent size, N = F*H*W/4 tokens):
  x [B,C_in,F,H,W] --patch_embedding (Conv3d, patch 1x2x2, in float32)--> tokens [B,N,dim]
  t [B] or [B,T] --sinusoid(freq_dim)--> time_embedding --> e [B,T,dim] --time_projection--> e0 [B,T,6,dim]
  context [B,L,text_dim] --text_embedding--> [B,L,dim]
  blocks: x += gate_a * self_attn(shift_a + norm(x) * (1 + scale_a))     (3D RoPE on q and k)
          x += cross_attn(norm3(x), context)
          x += gate_f * ffn(shift_f + norm(x) * (1 + scale_f))           (shift/scale/gate = modulation + e0)
  head: linear(shift + norm(x) * (1 + scale)) --unpatchify--> [B,C_out,F,H,W]

Timesteps: with t of shape [B] every token gets the same conditioning. With t of shape [B,T] (what
ComfyUI's WAN22 passes: one timestep per latent frame, 0 for a clean TI2V first frame) the T rows are
spread over the N tokens in order, N/T consecutive tokens per row (a row per latent frame when T = F);
when T does not divide N, each row covers N//T + 1 tokens and the last row is cut short, as ComfyUI does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..errors import InputError
from ..injection import add_motion_patch, motion_conv_for
from .config import WanDiTConfig, strip_prefix

ROPE_THETA = 10000.0
MOTION_PREFIX = "motion_patch."

BlockHook = Callable[[torch.Tensor], torch.Tensor]


def timestep_sinusoid(t: torch.Tensor, dim: int) -> torch.Tensor:
    """t: [N] (any float) -> [N,dim] float32, cosines then sines, frequencies 10000^(-i/(dim/2)).

    The frequencies are computed in float32 with ``pow``, as Wan's reference does: timesteps reach 1000,
    so a different rounding of the frequencies would shift the angles by ~1e-4."""
    half = dim // 2
    freqs = torch.pow(10000.0, -torch.arange(half, dtype=torch.float32, device=t.device).div(half))
    angles = torch.outer(t.float(), freqs)
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=1)


def rope_tables(grid: Sequence[int], axes: Sequence[int], device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotary tables of a (frames, rows, columns) token grid, token order frame-major then row-major.

    Each head's channel pairs are split over the three axes (``axes`` channels each, sum = head width);
    within an axis of ``a`` channels pair i turns by position * theta^(-2i/a). Returns cos, sin
    [N, head_dim/2] float32 (angles in float64)."""
    per_axis = []
    for size, a in zip(grid, axes, strict=True):
        omega = ROPE_THETA ** -(torch.arange(a // 2, dtype=torch.float64, device=device) * 2 / a)
        per_axis.append(torch.arange(size, dtype=torch.float64, device=device)[:, None] * omega[None])
    f, h, w = grid
    angles = torch.cat([
        per_axis[0][:, None, None].expand(f, h, w, -1),
        per_axis[1][None, :, None].expand(f, h, w, -1),
        per_axis[2][None, None, :].expand(f, h, w, -1),
    ], dim=-1).reshape(f * h * w, -1)
    return torch.cos(angles).float(), torch.sin(angles).float()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate consecutive channel pairs (2i, 2i+1) of x [B,N,heads,head_dim] by the table angles, in float32;
    returns x's dtype. cos, sin: [N, head_dim/2]."""
    pairs = x.float().unflatten(-1, (-1, 2))
    a, b = pairs[..., 0], pairs[..., 1]
    c, s = cos[:, None], sin[:, None]
    return torch.stack([a * c - b * s, a * s + b * c], dim=-1).flatten(-2).to(x.dtype)


class TokenGroups:
    """Spreads per-timestep conditioning rows [B,T,dim] over N tokens (see the module docstring)."""

    def __init__(self, rows: int, tokens: int, device=None):
        self.rows, self.tokens = rows, tokens
        if rows == 1 or tokens % rows == 0:
            self.index = None  # broadcast over a [B,T,N/T,dim] view of the tokens
        else:
            self.index = torch.arange(tokens, device=device) // (tokens // rows + 1)

    def _apply(self, op, x: torch.Tensor, *rows: torch.Tensor) -> torch.Tensor:
        if self.rows == 1:
            return op(x, *rows)
        if self.index is not None:
            return op(x, *(r.index_select(1, self.index) for r in rows))
        b, n, d = x.shape
        out = op(x.reshape(b, self.rows, n // self.rows, d), *(r[:, :, None] for r in rows))
        return out.reshape(b, n, d)

    def modulate(self, x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """shift + x * (1 + scale)"""
        return self._apply(lambda v, sh, sc: torch.addcmul(sh, v, 1 + sc), x, shift, scale)

    def gated_add(self, x: torch.Tensor, y: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
        """x + y * gate"""
        if self.rows == 1:
            return torch.addcmul(x, y, gate)
        return x + self._apply(lambda v, g: v * g, y, gate)


class RMSNorm(nn.RMSNorm):
    """nn.RMSNorm whose gain follows the input's dtype (under autocast q/k arrive in bf16/fp16)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, self.normalized_shape, self.weight.to(x.dtype), self.eps)


def _attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
    """[B,N,heads*d] x [B,S,heads*d] -> [B,N,heads*d], softmax(q k^T / sqrt(d)) v per head."""
    q, k, v = (z.unflatten(-1, (heads, -1)).transpose(1, 2) for z in (q, k, v))
    return F.scaled_dot_product_attention(q, k, v).transpose(1, 2).flatten(2)


class _WanAttention(nn.Module):
    """q, k, v, o projections and the RMS norms of q and k over the full width (Wan's key names)."""

    def __init__(self, dim: int, heads: int, eps: float, qk_norm: bool = True):
        super().__init__()
        self.heads = heads
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim) for _ in range(4))
        self.norm_q = RMSNorm(dim, eps=eps) if qk_norm else nn.Identity()
        self.norm_k = RMSNorm(dim, eps=eps) if qk_norm else nn.Identity()


class WanSelfAttention(_WanAttention):
    """Self-attention with RoPE on q and k."""

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        q = apply_rope(self.norm_q(self.q(x)).unflatten(-1, (self.heads, -1)), cos, sin).flatten(2)
        k = apply_rope(self.norm_k(self.k(x)).unflatten(-1, (self.heads, -1)), cos, sin).flatten(2)
        return self.o(_attention(q, k, self.v(x), self.heads))


class WanCrossAttention(_WanAttention):
    """Video tokens attend to the embedded text tokens (no positional embedding)."""

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        q, k = self.norm_q(self.q(x)), self.norm_k(self.k(context))
        return self.o(_attention(q, k, self.v(context), self.heads))


class WanBlock(nn.Module):
    def __init__(self, c: WanDiTConfig):
        super().__init__()
        self.norm1 = nn.LayerNorm(c.dim, eps=c.eps, elementwise_affine=False)
        self.self_attn = WanSelfAttention(c.dim, c.num_heads, c.eps, c.qk_norm)
        self.norm3 = nn.LayerNorm(c.dim, eps=c.eps) if c.cross_attn_norm else nn.Identity()
        self.cross_attn = WanCrossAttention(c.dim, c.num_heads, c.eps, c.qk_norm)
        self.norm2 = nn.LayerNorm(c.dim, eps=c.eps, elementwise_affine=False)
        self.ffn = nn.Sequential(nn.Linear(c.dim, c.ffn_dim), nn.GELU(approximate="tanh"), nn.Linear(c.ffn_dim, c.dim))
        self.modulation = nn.Parameter(torch.empty(1, 6, c.dim))

    def forward(self, x: torch.Tensor, e0: torch.Tensor, context: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                groups: TokenGroups) -> torch.Tensor:
        """x [B,N,dim]; e0 [B,T,6,dim] projected time embedding; context [B,L,dim]."""
        shift_a, scale_a, gate_a, shift_f, scale_f, gate_f = (self.modulation.to(x.dtype)[None] + e0).unbind(2)
        y = self.self_attn(groups.modulate(self.norm1(x), shift_a, scale_a), cos, sin)
        x = groups.gated_add(x, y, gate_a)
        x = x + self.cross_attn(self.norm3(x), context)
        y = self.ffn(groups.modulate(self.norm2(x), shift_f, scale_f))
        return groups.gated_add(x, y, gate_f)


class WanHead(nn.Module):
    def __init__(self, c: WanDiTConfig):
        super().__init__()
        self.norm = nn.LayerNorm(c.dim, eps=c.eps, elementwise_affine=False)
        self.head = nn.Linear(c.dim, c.patch_volume * c.out_dim)
        self.modulation = nn.Parameter(torch.empty(1, 2, c.dim))

    def forward(self, x: torch.Tensor, e: torch.Tensor, groups: TokenGroups) -> torch.Tensor:
        """x [B,N,dim]; e [B,T,dim] time embedding (before the projection)."""
        shift, scale = (self.modulation.to(x.dtype)[None] + e[:, :, None]).unbind(2)
        return self.head(groups.modulate(self.norm(x), shift, scale))


class WanDiT(nn.Module):
    """Wan DiT with the IM-Animation training hooks.

    ``motion_channels`` > 0 adds ``motion_patch``, a zero-initialised Conv3d from the retargeted-motion
    channels to the width whose output is added to the patch embedding's (the split form of the widened
    patch embedding, as ``injection.MotionPatchEmbedding``). Its keys (``motion_patch.*``) are not Wan keys:
    ``wan_state_dict()`` leaves them out, ``save_wan_state_dict`` merges them into a widened
    ``patch_embedding``. ``attach_motion_patch`` shares an existing convolution instead (e.g.
    ``IMAnimationModules.motion_patch``)."""

    def __init__(self, config: WanDiTConfig, motion_channels: int = 0, init: bool = True):
        super().__init__()
        self.config = c = config
        self.patch_embedding = nn.Conv3d(c.in_dim, c.dim, kernel_size=c.patch_size, stride=c.patch_size)
        self.text_embedding = nn.Sequential(nn.Linear(c.text_dim, c.dim), nn.GELU(approximate="tanh"),
                                            nn.Linear(c.dim, c.dim))
        self.time_embedding = nn.Sequential(nn.Linear(c.freq_dim, c.dim), nn.SiLU(), nn.Linear(c.dim, c.dim))
        self.time_projection = nn.Sequential(nn.SiLU(), nn.Linear(c.dim, 6 * c.dim))
        self.blocks = nn.ModuleList(WanBlock(c) for _ in range(c.num_layers))
        self.head = WanHead(c)
        self.motion_patch: nn.Conv3d | None = None
        if motion_channels:
            self.motion_patch = motion_conv_for(c.dim, motion_channels, c.patch_size)
        self.checkpoint_blocks: frozenset[int] = frozenset()
        if init:
            self.init_weights()

    # ---- construction -------------------------------------------------------------------------------

    def init_weights(self) -> None:
        """Initialisation for training from scratch: Xavier-uniform linear and patch weights, zero biases,
        N(0, 0.02) text and time embeddings, modulation tables N(0, 1/dim), a zero output layer (the
        untrained model predicts 0). The motion patch stays zero."""
        dim = self.config.dim
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, (nn.LayerNorm, nn.RMSNorm)) and module.weight is not None:
                nn.init.ones_(module.weight)
                if getattr(module, "bias", None) is not None:
                    nn.init.zeros_(module.bias)
        nn.init.xavier_uniform_(self.patch_embedding.weight.flatten(1))
        nn.init.zeros_(self.patch_embedding.bias)
        for seq in (self.text_embedding, self.time_embedding):
            for layer in seq:
                if isinstance(layer, nn.Linear):
                    nn.init.normal_(layer.weight, std=0.02)
        for block in self.blocks:
            nn.init.normal_(block.modulation, std=dim**-0.5)
        nn.init.normal_(self.head.modulation, std=dim**-0.5)
        nn.init.zeros_(self.head.head.weight)
        if self.motion_patch is not None:
            nn.init.zeros_(self.motion_patch.weight)
            nn.init.zeros_(self.motion_patch.bias)

    @classmethod
    def from_state_dict(cls, sd: Mapping[str, torch.Tensor], *, latent_channels: int | None = None,
                        dtype: torch.dtype | None = None, device=None, copy: bool = True,
                        **config_overrides) -> WanDiT:
        """Build from a Wan state dict (a stock Wan file, or one written by ``save_wan_state_dict``).

        With ``latent_channels`` smaller than the file's in_dim, the widened patch embedding is split back:
        its first ``latent_channels`` input channels stay ``patch_embedding``, the rest become
        ``motion_patch`` (the bias stays with the base, the motion bias is zero: the same sum). Tensors are
        moved to ``device`` / cast to ``dtype`` (default: as stored). The model is built on the meta device
        and takes the tensors by assignment; with ``copy=False`` tensors already of the right device and
        dtype are used without a copy (a 5B file is then held once; the dict must not be used elsewhere)."""
        sd = strip_prefix(sd)
        config = WanDiTConfig.from_state_dict(sd, **config_overrides)
        motion_channels = 0
        sd = dict(sd)
        if latent_channels is not None and latent_channels != config.in_dim:
            if not 0 < latent_channels < config.in_dim:
                raise InputError(f"latent_channels {latent_channels} must be below the file's patch-embedding "
                                 f"input width {config.in_dim}")
            weight = sd["patch_embedding.weight"]
            sd["patch_embedding.weight"] = weight[:, :latent_channels]
            sd["motion_patch.weight"] = weight[:, latent_channels:]
            sd["motion_patch.bias"] = torch.zeros_like(sd["patch_embedding.bias"])
            motion_channels = config.in_dim - latent_channels
            config.in_dim = latent_channels
        with torch.device("meta"):
            model = cls(config, motion_channels=motion_channels, init=False)
        sd = {k: v.to(device=device, dtype=dtype or v.dtype, copy=copy).contiguous() for k, v in sd.items()}
        model.load_state_dict(sd, strict=True, assign=True)
        return model

    def attach_motion_patch(self, conv: nn.Conv3d | None) -> None:
        """Use ``conv`` (shared, not copied) as the motion convolution; None removes it."""
        if conv is not None:
            if conv.out_channels != self.config.dim or tuple(conv.kernel_size) != self.config.patch_size:
                raise InputError(f"motion convolution {conv.in_channels}->{conv.out_channels}, kernel "
                                 f"{tuple(conv.kernel_size)} does not fit a DiT of width {self.config.dim} and "
                                 f"patch {self.config.patch_size}")
        self.motion_patch = conv

    def set_gradient_checkpointing(self, enabled: bool | Iterable[int] = True) -> None:
        """Recompute the activations of the given blocks (all when True) in the backward pass
        (torch.utils.checkpoint, non-reentrant) instead of keeping them; only while grad is enabled."""
        if enabled is True:
            self.checkpoint_blocks = frozenset(range(len(self.blocks)))
        elif enabled is False:
            self.checkpoint_blocks = frozenset()
        else:
            indices = frozenset(int(i) for i in enabled)
            bad = [i for i in indices if not 0 <= i < len(self.blocks)]
            if bad:
                raise ValueError(f"no blocks {sorted(bad)}: the DiT has {len(self.blocks)}")
            self.checkpoint_blocks = indices

    def wan_state_dict(self) -> dict[str, torch.Tensor]:
        """The state dict with Wan's keys only (no ``motion_patch.*``)."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith(MOTION_PREFIX)}

    @property
    def dtype(self) -> torch.dtype:
        return self.text_embedding[0].weight.dtype

    @property
    def motion_channels(self) -> int:
        return 0 if self.motion_patch is None else self.motion_patch.in_channels

    # ---- forward ------------------------------------------------------------------------------------

    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        """Pad frames/rows/columns up to multiples of the patch (circular, as ComfyUI pads)."""
        pad = []
        for size, p in zip(reversed(x.shape[2:]), reversed(self.config.patch_size), strict=True):
            pad += [0, (p - size % p) % p]
        return F.pad(x, pad, mode="circular") if any(pad) else x

    def _embed(self, x: torch.Tensor, motion: torch.Tensor | None) -> torch.Tensor:
        """Patch embedding (+ motion patch) in float32: [B,dim,F',H',W'] float32."""
        pe = self.patch_embedding
        out = F.conv3d(self._pad(x).float(), pe.weight.float(), pe.bias.float(), stride=pe.stride)
        mp = self.motion_patch
        if mp is None:
            return out
        if motion is None:  # zero motion channels: only the motion bias (as a widened export would give)
            return out + mp.bias.float()[None, :, None, None, None]
        return add_motion_patch(out, mp, self._pad(motion), torch.float32)

    def _check_inputs(self, x, t, context, motion) -> None:
        c = self.config
        if x.ndim != 5 or x.shape[1] != c.in_dim:
            raise InputError(f"the DiT takes x [B,{c.in_dim},F,H,W], got {tuple(x.shape)}")
        if t.ndim not in (1, 2) or t.shape[0] != x.shape[0]:
            raise InputError(f"timesteps must be [B] or [B,T] with B = {x.shape[0]}, got {tuple(t.shape)}")
        if context.ndim != 3 or context.shape[0] != x.shape[0] or context.shape[2] != c.text_dim:
            raise InputError(f"context must be [B,L,{c.text_dim}] with B = {x.shape[0]}, got {tuple(context.shape)}")
        if motion is not None:
            if self.motion_patch is None:
                raise InputError("a motion input was given but the DiT has no motion patch (motion_channels=0)")
            want = (x.shape[0], self.motion_patch.in_channels, *x.shape[2:])
            if tuple(motion.shape) != want:
                raise InputError(f"motion must be {list(want)} (the latent's batch, frames and size), got "
                                 f"{list(motion.shape)}")

    def forward(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor, motion: torch.Tensor | None = None,
                block_hooks: Mapping[int, BlockHook | Sequence[BlockHook]] | None = None) -> torch.Tensor:
        """x [B,in_dim,F,H,W] noisy latent; t [B] timesteps (Wan's 0..1000 scale) or [B,T] per-token-group
        timesteps (T = F: one per latent frame); context [B,L,text_dim] text embeddings;
        motion [B,C_r,F,H,W] for the motion patch (None: zero motion); block_hooks {i: f or [f, ...]}: each
        f(tokens [B,N,dim]) -> tokens runs after block i (tokens frame-major, N = F*(H/2)*(W/2); e.g.
        ``functools.partial(expression_block, expression=..., skip_frames=1)``).
        Returns [B,out_dim,F,H,W] in the model's dtype."""
        c = self.config
        t = t.reshape(1).expand(x.shape[0]) if t.ndim == 0 else t
        self._check_inputs(x, t, context, motion)
        hooks = {}
        for i, fns in (block_hooks or {}).items():
            if not 0 <= i < len(self.blocks):
                raise ValueError(f"block hook at index {i}, but the DiT has blocks 0..{len(self.blocks) - 1}")
            hooks[i] = list(fns) if isinstance(fns, (list, tuple, nn.ModuleList)) else [fns]
        dtype = self.dtype
        b, _, frames, height, width = x.shape

        tokens = self._embed(x, motion).to(dtype)
        grid = tuple(tokens.shape[2:])
        tokens = tokens.flatten(2).transpose(1, 2)
        n = tokens.shape[1]

        e = self.time_embedding(timestep_sinusoid(t.flatten(), c.freq_dim).to(dtype)).reshape(b, -1, c.dim)
        e0 = self.time_projection(e).unflatten(2, (6, c.dim))
        context = self.text_embedding(context.to(dtype))
        cos, sin = rope_tables(grid, c.rope_axes, device=x.device)
        groups = TokenGroups(e.shape[1], n, device=x.device)

        for i, block in enumerate(self.blocks):
            if i in self.checkpoint_blocks and torch.is_grad_enabled():
                tokens = checkpoint(block, tokens, e0, context, cos, sin, groups, use_reentrant=False)
            else:
                tokens = block(tokens, e0, context, cos, sin, groups)
            for fn in hooks.get(i, ()):
                tokens = fn(tokens)

        out = self.head(tokens, e, groups)
        return self.unpatchify(out, grid)[:, :, :frames, :height, :width]

    def unpatchify(self, tokens: torch.Tensor, grid: Sequence[int]) -> torch.Tensor:
        """[B,N,pt*ph*pw*C] (features ordered patch-t, patch-h, patch-w, channel) -> [B,C,F'*pt,H'*ph,W'*pw]."""
        (f, h, w), (pt, ph, pw) = grid, self.config.patch_size
        b, c = tokens.shape[0], self.config.out_dim
        u = tokens.reshape(b, f, h, w, pt, ph, pw, c).permute(0, 7, 1, 4, 2, 5, 3, 6)
        return u.reshape(b, c, f * pt, h * ph, w * pw)


def wan_dit_on_meta(config: WanDiTConfig | None = None, motion_channels: int = 0) -> WanDiT:
    """The DiT on the meta device (no memory): for counting parameters or planning sharding.
    Default config: Wan2.2 TI2V-5B."""
    with torch.device("meta"):
        return WanDiT(config or WanDiTConfig.ti2v_5b(), motion_channels=motion_channels, init=False)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def parameter_count(config: WanDiTConfig) -> int:
    """Parameters of a Wan DiT of this config (computed on the meta device)."""
    return count_parameters(wan_dit_on_meta(config))


__all__ = ["WanDiT", "WanDiTConfig", "apply_rope", "count_parameters", "parameter_count", "rope_tables",
           "timestep_sinusoid", "wan_dit_on_meta"]
