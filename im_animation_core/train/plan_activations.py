"""Activation memory and matmul FLOPs of the Stage-3 model's transformer blocks, by formula.

Every count is what autograd keeps for the backward pass of one block on ``tokens`` tokens (batch folded
in), with the block computing in bf16 (FSDP's ``MixedPrecisionPolicy(param_dtype=bfloat16)``: parameters
and activations bf16, no autocast) on GPU kernels: flash / memory-efficient attention (keeps q, k, v, its
output and a float32 log-sum-exp per head and query), LayerNorm and a fused RMSNorm (keep their bf16 input
and float32 statistics). Parameters are not counted (FSDP frees the gathered bf16 copies after use).
``tests/unit/test_train_plan.py`` compares the bf16 counts with what autograd saves on the CPU.

Wan DiT block (``wan.model.WanBlock``), N tokens of width d, FFN width f, h heads, L text tokens:

- bf16, N x d each (16): self-attention: block input, norm1 output, modulated input, q and k after RoPE,
  v, attention output, o output; cross-attention: its input, norm3 output, q after its RMSNorm, attention
  output; FFN: its input, norm2 output, modulated input, FFN output;
- bf16, N x f (2): the GELU's input and output;
- bf16, N x d (3): the inputs of the q/k RMSNorms (self q, self k, cross q) (``qk_norm_inputs``: a fused
  RMSNorm keeps them in bf16; a composite one, as on the CPU, keeps two float32 copies instead);
- bf16, L x d (3): the cross-attention's k RMSNorm input, k and v;
- float32: mean and rstd of the three LayerNorms (6 N), rstd of the RMSNorms (3 N + L), the attention
  log-sum-exp (2 h N).

With per-block checkpointing a block keeps only its input (N x d bf16); one block's full set is live again
while its backward runs.

Pre-LN transformer block (``layers.TransformerBlock``, the tokenizer's ``ResidualAttentionBlock``), width
W, MLP width M: bf16 8 N x W (norm1 input and output, q, k, v, attention output, norm2 input and output)
and 2 N x M (GELU input and output); float32 4 N (LayerNorm statistics) + h N (log-sum-exp).

Expression block (``expression.ExpressionBlock``) on N tokens of which N' are driven frames, K expression
tokens of width e per driven frame (F' of them): bf16 N x d (its input) + 3 N' x d (norm output, q,
attention output) + F' K (e + 2 d) (the expression tokens and their k, v); float32 2 N' + h N'.

Outside the blocks only ``dit_outer`` is counted: the DiT head's LayerNorm and modulation (3 N x d bf16) and
the RoPE tables the blocks share (N x head width float32). Not counted (small next to the blocks at paper
scale): the DiT's patch embedding, the retargeter's heatmap head, the expression encoder's convolutions,
the tokenizer's patch convolution, the loss, and the transient gradient buffers of the backward pass (a
few tensors of one block).
"""

from __future__ import annotations

from dataclasses import dataclass

BF16, FP32 = 2, 4


@dataclass(frozen=True)
class Saved:
    """Elements autograd keeps: bf16 token tensors, bf16 q/k RMSNorm inputs (see module doc), float32."""

    bf16: int = 0
    qk_norm_inputs: int = 0
    fp32: int = 0

    @property
    def bytes(self) -> int:
        return BF16 * (self.bf16 + self.qk_norm_inputs) + FP32 * self.fp32

    def __add__(self, other: Saved) -> Saved:
        return Saved(self.bf16 + other.bf16, self.qk_norm_inputs + other.qk_norm_inputs, self.fp32 + other.fp32)

    def __mul__(self, k: int) -> Saved:
        return Saved(self.bf16 * k, self.qk_norm_inputs * k, self.fp32 * k)

    __rmul__ = __mul__


def wan_block(tokens: int, dim: int, ffn_dim: int, heads: int, text_tokens: int) -> Saved:
    n, d, lc = tokens, dim, text_tokens
    return Saved(bf16=16 * n * d + 2 * n * ffn_dim + 3 * lc * d, qk_norm_inputs=3 * n * d,
                 fp32=6 * n + 3 * n + lc + 2 * heads * n)


def dit_outer(tokens: int, dim: int, head_dim: int) -> Saved:
    """Kept once per forward, outside the blocks: the head's LayerNorm input and output and the modulated input
    of its projection (bf16), and the RoPE cos / sin tables every block's attention shares (float32)."""
    return Saved(bf16=3 * tokens * dim, fp32=2 * tokens + tokens * head_dim)


def preln_block(tokens: int, width: int, mlp_width: int, heads: int) -> Saved:
    return Saved(bf16=8 * tokens * width + 2 * tokens * mlp_width, fp32=4 * tokens + heads * tokens)


def expression_block(tokens: int, driven_tokens: int, dim: int, heads: int, driven_frames: int,
                     expression_tokens: int, expression_width: int) -> Saved:
    context = driven_frames * expression_tokens * (expression_width + 2 * dim)
    return Saved(bf16=tokens * dim + 3 * driven_tokens * dim + context, fp32=2 * driven_tokens + heads * driven_tokens)


def checkpointed_input(tokens: int, dim: int) -> Saved:
    return Saved(bf16=tokens * dim)


# ---- matmul FLOPs (forward; multiply-add = 2 FLOPs) ---------------------------------------------------------
def wan_block_flops(tokens: int, dim: int, ffn_dim: int, text_tokens: int) -> int:
    """Self-attention q, k, v, o and cross-attention q, o projections, the FFN, the cross-attention k, v of the
    text, and the two attention products of each attention."""
    n, d, lc = tokens, dim, text_tokens
    linear = 2 * n * (6 * d * d + 2 * d * ffn_dim) + 2 * lc * 2 * d * d
    return linear + 4 * n * n * d + 4 * n * lc * d


def preln_block_flops(tokens: int, width: int, mlp_width: int) -> int:
    return 2 * tokens * (4 * width * width + 2 * width * mlp_width) + 4 * tokens * tokens * width
