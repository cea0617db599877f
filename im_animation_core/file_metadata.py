"""The JSON record a safetensors file of this project carries under one metadata key."""

from __future__ import annotations

import json
from pathlib import Path

from safetensors import SafetensorError, safe_open

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
