"""Random motion tokenizers with weight scales like a trained one, for fixtures, tests and benchmarks."""

from __future__ import annotations

import torch

from .checkpoint import expected_shapes
from .config import MotionTokenizerConfig


def random_state_dict(config: MotionTokenizerConfig, seed: int = 0,
                      dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """Released-name tensors with realistic scales: matrices ~ N(0, 1/fan_in) (activations neither vanish
    nor explode, attention is far from uniform), LayerNorm gains 1 + N(0, 0.1^2), biases N(0, 0.02^2),
    embeddings N(0, 0.5^2), codebook N(0, 1). Deterministic for a given seed; CPU tensors of ``dtype``."""
    gen = torch.Generator().manual_seed(seed)
    out: dict[str, torch.Tensor] = {}
    for name, shape in expected_shapes(config).items():
        leaf = name.rsplit(".", 1)[-1]
        noise = torch.randn(shape, generator=gen)
        if name == "quantize.embedding.weight":
            value = noise
        elif ".ln_" in name or name.startswith("encoder.ln_"):
            value = 1.0 + 0.1 * noise if leaf == "weight" else 0.02 * noise
        elif leaf in ("weight", "in_proj_weight"):
            fan_in = int(torch.tensor(shape[1:]).prod())
            value = noise / fan_in ** 0.5
        elif leaf in ("bias", "in_proj_bias"):
            value = 0.02 * noise
        else:  # class / positional / latent embeddings, latent tokens
            value = 0.5 * noise
        out[name] = value.to(dtype)
    return out
