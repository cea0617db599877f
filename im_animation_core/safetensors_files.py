"""Reading this project's safetensors files, with errors that name the kind of file."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file

from .errors import CheckpointError


def json_metadata(path: str | Path, key: str, what: str) -> dict:
    """The JSON object stored under metadata ``key`` of a safetensors file ({} when absent or unreadable
    JSON). Raises CheckpointError naming ``what`` (e.g. "Wan VAE") when the file cannot be read."""
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"cannot read {what} file '{path}': {e}") from e
    try:
        return json.loads(meta.get(key, "{}"))
    except json.JSONDecodeError:
        return {}


def load_safetensors(path: str | Path, what: str, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """All tensors of a safetensors file. Raises CheckpointError naming ``what`` when it cannot be read."""
    try:
        return load_file(str(path), device=str(device))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"cannot read {what} file '{path}': {e}. Is it a complete .safetensors file?") from e
