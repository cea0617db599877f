"""Batching pair samples."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..errors import InputError


def collate_pairs(batch: Sequence[dict]) -> dict:
    """A list of sample dicts (SyntheticPairs / VideoFolder / AugmentedPairs items) -> one dict whose tensors
    gain a leading batch dimension (driving [B,T,H,W,3], identity [B,H,W,3], ...). Numbers become tensors,
    other values lists. Every sample must have the same keys and, per key, the same shape."""
    if not batch:
        raise InputError("cannot collate an empty batch")
    keys = list(batch[0])
    for i, sample in enumerate(batch):
        if set(sample) != set(keys):
            raise InputError(
                f"sample {i} of the batch has keys {sorted(sample)}, sample 0 has {sorted(keys)}: combine only "
                "datasets that return the same keys"
            )
    out = {}
    for key in keys:
        values = [s[key] for s in batch]
        first = values[0]
        if isinstance(first, torch.Tensor):
            shapes = {tuple(v.shape) for v in values}
            if len(shapes) > 1:
                raise InputError(
                    f"'{key}' has different shapes in one batch: {sorted(shapes)}; give the datasets the same "
                    "frames and size"
                )
            out[key] = torch.stack(values)
        elif isinstance(first, (bool, int, float)):
            out[key] = torch.tensor(values)
        else:
            out[key] = list(values)
    return out
