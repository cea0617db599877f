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


def header(path: str | Path, what: str) -> tuple[dict[str, str], dict[str, tuple[int, ...]]]:
    """(metadata, tensor name -> shape) from a safetensors file's header, without reading any tensor, so that
    sizes can be checked before anything is allocated. Raises CheckpointError naming ``what``."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return (f.metadata() or {}), {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"cannot read {what} file '{Path(path).name}': {e}. Is it a complete .safetensors "
                              "file?") from e


def check_finite(tensors: dict[str, torch.Tensor], source: str) -> None:
    """Raise CheckpointError naming the tensors that hold NaN or infinite values (they would give black output)."""
    bad = [k for k, t in tensors.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        shown = ", ".join(bad[:8]) + (f" and {len(bad) - 8} more" if len(bad) > 8 else "")
        raise CheckpointError(f"{source} has NaN or infinite values in tensor(s) {shown}. The file is damaged "
                              "(or its training diverged): use another file.")


# A size field above this cannot belong to a model that fits any machine; checked before any module is built.
MAX_SIZE_FIELD = 1 << 20


def sizes_from_json(cls, text: str | None, key: str, source: str):
    """The dataclass ``cls`` from a JSON metadata record, with every int field a whole number in
    [0, MAX_SIZE_FIELD]. Raises CheckpointError naming the file, the record and the field."""
    import dataclasses

    try:
        raw = json.loads(text) if text is not None else None
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{source}: metadata record '{key}' is not valid JSON ({e}); re-export the file.") from e
    if not isinstance(raw, dict):
        raise CheckpointError(f"{source}: metadata record '{key}' is missing or not an object; re-export the file.")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise CheckpointError(f"{source}: metadata record '{key}' has unknown field(s) {unknown}; the file was "
                              "written by another version: update the pack or re-export the file.")
    for name, value in raw.items():
        if fields[name].type in ("int", int) and (isinstance(value, bool) or not isinstance(value, int)
                                                  or not 0 <= value <= MAX_SIZE_FIELD):
            raise CheckpointError(f"{source}: metadata '{key}.{name}' = {value!r} is not a size (a whole number "
                                  f"from 0 to {MAX_SIZE_FIELD}); the file is damaged: re-export it.")
    try:
        return cls(**raw)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{source}: metadata record '{key}' is invalid ({e}); re-export the file.") from e
