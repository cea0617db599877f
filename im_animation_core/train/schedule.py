"""The learning-rate schedule of every trainer (the three stages, the VAE, the retargeting study)."""

from __future__ import annotations

import math


def lr_factor(k: int, warmup_steps: int, decay_steps: int, steps: int, shape: str = "linear") -> float:
    """The learning-rate multiplier of optimiser step k (0-based) of ``steps``: linear warm-up over the first
    warmup_steps, then by ``shape``: "linear" holds 1 and decays linearly to 0 over the last decay_steps
    (warm-up and decay multiply where they overlap); "cosine" falls from 1 after the warm-up to 0.1 at the
    last step (decay_steps unused); "constant" is "linear" without decay."""
    warm = min(1.0, (k + 1) / warmup_steps) if warmup_steps else 1.0
    if shape == "cosine":
        if warmup_steps and k < warmup_steps:
            return warm
        p = (k - warmup_steps) / max(1, steps - warmup_steps)
        return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, p)))
    decay = min(1.0, max(0.0, (steps - k) / decay_steps)) if decay_steps and shape == "linear" else 1.0
    return warm * decay
