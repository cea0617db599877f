"""Reading this project's safetensors files, with errors that name the kind of file: metadata, shapes from the
header, strict loading (what is missing, unexpected or of the wrong shape), and one-pass reads that check the
header before any tensor is read. Every safetensors file the project reads is read here."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file

from .errors import CheckpointError, IMAnimationError


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


# The safetensors header's dtype names of the floating-point dtypes, as torch dtypes.
TORCH_DTYPES = {"F16": torch.float16, "BF16": torch.bfloat16, "F32": torch.float32, "F64": torch.float64}


def read_checked(path: str | Path, what: str,
                 check: Callable[[dict[str, str], dict[str, tuple[int, ...]], dict[str, str]], None] | None = None,
                 names: Iterable[str] | None = None, convert: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 error: type[Exception] = CheckpointError) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """(metadata, tensors) of a safetensors file, opened once.

    ``check(metadata, shapes, dtypes)`` (name -> shape tuple, name -> header dtype such as "F16") runs on the
    header before any tensor is read, so a file it refuses (by raising) costs nothing more. ``names``: the
    tensors to read (default all). ``convert`` is applied to each tensor as it is read, so that only one
    tensor of the file's own copy is held at a time. A file that cannot be read raises ``error`` naming
    ``what``."""
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            if check is not None:
                slices = {k: f.get_slice(k) for k in f.keys()}
                check(meta, {k: tuple(s.get_shape()) for k, s in slices.items()},
                      {k: s.get_dtype() for k, s in slices.items()})
            tensors = {}
            for name in (f.keys() if names is None else names):
                tensor = f.get_tensor(name)
                tensors[name] = convert(tensor) if convert is not None else tensor
                del tensor
    except IMAnimationError:  # a refusal by check, already naming the file
        raise
    except (SafetensorError, OSError, ValueError) as e:
        raise error(f"cannot read {what} file '{Path(path).name}': {e}. Is it a complete .safetensors "
                    "file?") from e
    return meta, tensors


def shape_mismatch(expected: Mapping[str, tuple[int, ...]], found: Mapping[str, tuple[int, ...]]
                   ) -> tuple[list[str], list[str], list[str]]:
    """(missing, unexpected, wrong shape): the names of ``expected`` absent from ``found`` (in expected's
    order), those of ``found`` not expected (sorted), and those in both with other shapes (expected's order).
    Shapes are compared as tuples of ints, so torch.Size and header lists compare alike."""
    have = {k: tuple(int(s) for s in v) for k, v in found.items()}
    missing = [k for k in expected if k not in have]
    unexpected = sorted(k for k in have if k not in expected)
    wrong = [k for k, v in expected.items() if k in have and have[k] != tuple(int(s) for s in v)]
    return missing, unexpected, wrong


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
