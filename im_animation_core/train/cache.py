"""A clip cache for Stages 2 and 3: what no trainable weight changes, computed once per clip.

A Stage-3 step on live data renders (or decodes) each clip, runs the frozen VAE on the target clip and the
identity image and the frozen motion encoder on the driving clip, crops the driver's faces, and only then
trains. ``build_cache`` runs that preparation once per clip (``Stage.cached_fields``) and writes the results;
``CachedClips`` serves them to the trainer, whose stages skip each part whose result the batch already holds.
The losses are those of live training on the same clips (tests/unit/test_train_cache.py).

Layout of the folder (``data.cache``):
    index.json            {"format", "version", "key", "clips", "total", "shard_size", "shards": [{"file",
                          "first", "count"}], "complete", "source"}: rewritten (temporary file, then rename)
                          after every shard. "source" describes the dataset the clips came from: for a video
                          folder the number of clips and samples, a SHA-256 of the sample list (clip, first
                          frame) and the skipped clips with their reasons
    shard_XXXXXX.safetensors   ``count`` clips from ``first`` on, each field stacked along axis 0; written under
                          a temporary name and renamed, so a shard that exists is whole

The key: everything that decides a cached value (the data config but its loader and cache fields, SHA-256 of
the VAE and motion-encoder files, the face-crop size and box source, whether the moving map is stored). A
folder built for another key is refused, naming the field that differs; for another VAE or motion encoder
the message names both files (the key keeps each file's path beside its hash, for that message only: a
moved file with the same bytes still matches). A frozen retargeter is keyed by its own tensors and settings
(``retargeter_sha256``), not by its whole modules file: a DiT-first phase exports a modules file whose other
modules (motion patch, expression) have trained, and its continuation must read the same cache.

Building is deterministic (clip i is dataset item i) and resumable: a rerun keeps the shards listed in the
index and continues after them, once it has checked that the dataset still lists the same samples (a video
folder whose clips changed would shift every later item). For generated data (no ``data.root``) item i does not
depend on the dataset's length, so ``data.num_samples`` is not part of the match: a config with more samples
grows the cache (building only the new clips), and one with fewer reads the first ``num_samples`` clips.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import logging
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch.utils.data import Dataset

from ..errors import IMAnimationError
from .config import ConfigError, Stage2Config, Stage3Config, flatten

log = logging.getLogger(__name__)

CACHE_FORMAT = "im-animation-clip-cache"
CACHE_VERSION = 1
INDEX_FILE = "index.json"
SHARD_SIZE = 32
# DataConfig fields that do not change a clip's content (how clips are loaded, where the cache is).
_DATA_FIELDS_NOT_IN_KEY = ("num_workers", "cache")


class CacheError(IMAnimationError):
    """A cache folder that cannot serve this config (another key, unfinished, unreadable)."""


def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


RETARGET_PREFIX = "retarget."


def retargeter_sha256(path: str) -> str:
    """SHA-256 of the retargeter inside a modules file: its settings (the file's "retarget" metadata) and every
    ``retarget.*`` tensor's name, dtype, shape and bytes, in name order. The other modules in the file do not
    change the motion maps, so they are left out."""
    h = hashlib.sha256()
    with safe_open(str(path), framework="pt") as f:
        h.update(((f.metadata() or {}).get("retarget", "")).encode())
        names = sorted(k for k in f.keys() if k.startswith(RETARGET_PREFIX))
        if not names:
            raise ConfigError(f"modules.path '{path}' holds no retargeter (no '{RETARGET_PREFIX}*' tensors): give "
                              f"the im_animation_modules.safetensors file of a Stage-2 or Stage-3 run")
        for name in names:
            t = f.get_tensor(name).contiguous()
            h.update(f"{name}|{t.dtype}|{list(t.shape)}|".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def cache_key(config: Stage2Config) -> dict[str, Any]:
    """The fields that decide what a cache built for ``config`` holds (see module doc)."""
    d = config.data
    if d.augment:
        raise ConfigError("config field 'data.augment' is on: augmentation draws new crops and colours at every "
                          "step, so its clips cannot be cached; turn it off or drop data.cache")
    # as index.json will read it back (a [height, width] size is a tuple here, a list there)
    data = json.loads(json.dumps({k: v for k, v in asdict(d).items() if k not in _DATA_FIELDS_NOT_IN_KEY}))
    trainable = config.conv_encoder.trainable if config.motion_encoder == "conv" else config.tokenizer.trainable
    if trainable:
        raise ConfigError("a clip cache holds the motion encoder's tokens, so the encoder must be frozen "
                          "(tokenizer.trainable / conv_encoder.trainable false) in a run with data.cache")
    kind = "conv" if config.motion_encoder == "conv" else "tokenizer"
    path = config.conv_encoder.path if kind == "conv" else config.tokenizer.path
    encoder = {"kind": kind, "file": file_sha256(path) if path else "", "path": str(path)}
    if not encoder["file"]:
        raise ConfigError("a clip cache needs the motion encoder from a file (tokenizer.path, or conv_encoder.path): "
                          "a freshly drawn encoder's tokens would not match between runs")
    if not config.vae.path:
        raise ConfigError("a clip cache needs the VAE from a file (vae.path)")
    key = {"stage": "stage3" if isinstance(config, Stage3Config) else "stage2", "data": data,
           "vae": {"file": file_sha256(config.vae.path), "path": str(config.vae.path),
                   "factory": config.vae.factory}, "motion_encoder": encoder}
    if isinstance(config, Stage3Config):
        key["face_boxes"] = config.expression_face_boxes
        key["moving_map"] = config.moving_weight > 0
        if not config.retarget_trainable:  # its motion maps are cached: the retargeter's file decides them
            if not config.modules.path:
                raise ConfigError("retarget_trainable is false, so the cache holds the retargeter's motion maps: "
                                  "give the retargeter from a file (modules.path)")
            key["frozen_retargeter"] = retargeter_sha256(config.modules.path)
    return key


# Key fields that name a file for messages only; the file's SHA-256 beside them decides.
_PATH_FIELDS = ("vae.path", "motion_encoder.path")
_FILE_FIELDS = {"vae.file": ("VAE", "vae.path", "vae.path"),
                "motion_encoder.file": ("motion encoder", "motion_encoder.path",
                                        "tokenizer.path (or conv_encoder.path)")}


def key_differences(built: dict, wanted: dict) -> list[str]:
    """'field (cache X, config Y)' for each flattened key field that differs."""
    a, b = flatten(built), flatten(wanted)
    out = []
    for k in sorted(set(a) | set(b)):
        if k in _PATH_FIELDS:
            continue
        if a.get(k, "absent") != b.get(k, "absent"):
            out.append(f"{k} (cache {json.dumps(a.get(k, 'absent'))}, config {json.dumps(b.get(k, 'absent'))})")
    return out


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
    os.replace(tmp, path)


def read_index(folder: Path) -> dict | None:
    path = folder / INDEX_FILE
    if not path.is_file():
        return None
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise CacheError(f"clip cache '{folder}': {INDEX_FILE} cannot be read ({e}); delete the folder and rebuild "
                         "it") from e
    if index.get("format") != CACHE_FORMAT or index.get("version") != CACHE_VERSION:
        raise CacheError(f"'{folder}' is not a clip cache of this version ({INDEX_FILE} says format "
                         f"{index.get('format')!r}, version {index.get('version')!r}); rebuild it")
    return index


def _length_free(key: dict) -> dict:
    """The key without data.num_samples when the data is generated (no data.root): SyntheticPairs' item i is a
    pure function of (seed, split, i), so a cache of N clips holds the first N of a longer one."""
    if key["data"].get("root"):
        return key
    return {**key, "data": {k: v for k, v in key["data"].items() if k != "num_samples"}}


def clips_needed(index: dict, key: dict) -> int:
    """How many clips from the start a config with this key reads from the cache: its num_samples for
    generated data, else every clip of the dataset the cache was built from."""
    if key["data"].get("root"):
        return int(index.get("total", index["key"]["data"]["num_samples"]))
    return int(key["data"]["num_samples"])


def check_key(folder: Path, index: dict, key: dict, config_path: str = "the config") -> None:
    built, key = _length_free(dict(index["key"])), _length_free(key)
    if "frozen_retargeter" not in key:  # a frozen retargeter's motion maps are extra fields, unused here
        built.pop("frozen_retargeter", None)
    a, b = flatten(built), flatten(key)
    for field_name, (what, path_field, config_field) in _FILE_FIELDS.items():
        if a.get(field_name) != b.get(field_name):
            old = a.get(path_field) or "a file not recorded in this cache"
            raise CacheError(
                f"clip cache '{folder}' was built with another {what}: the cache's is '{old}' (SHA-256 "
                f"{str(a.get(field_name, 'absent'))[:16]}...), this config's {config_field} is '{b.get(path_field)}' "
                f"(SHA-256 {str(b.get(field_name))[:16]}...). Its latents / tokens would not be this {what}'s: "
                f"rebuild the cache for this config in a new folder (python -m im_animation_core.train cache "
                f"--config {config_path}), or point {config_field} at the file the cache was built with")
    diff = key_differences(built, key)
    if diff:
        raise CacheError(f"clip cache '{folder}' was built for another config; differing field(s): "
                         f"{'; '.join(diff[:5])}. Rebuild it for this config (python -m im_animation_core.train "
                         f"cache --config {config_path}) in a new folder, or set data.cache to the matching one")


def dataset_source(dataset: Any) -> dict[str, Any]:
    """What the index records of the dataset behind a cache: for a video folder the clip and sample counts, a
    SHA-256 of the sample list (clip path relative to the folder, first frame) and the skipped clips
    ({relative path: reason}); for a generated dataset its length."""
    source: dict[str, Any] = {"samples": len(dataset)}
    root = getattr(dataset, "root", None)
    if root is None or not hasattr(dataset, "describe"):
        return source

    def rel(path: str) -> str:
        try:
            return Path(path).relative_to(root).as_posix()
        except ValueError:
            return str(path)

    items = [[rel(p), start] for p, start in map(dataset.describe, range(len(dataset)))]
    source.update(clips=len(dataset.clips), items_sha256=hashlib.sha256(json.dumps(items).encode()).hexdigest(),
                  skipped={rel(p): r for p, r in sorted(dataset.skipped.items())})
    return source


def build_cache(stage_name: str, config: Stage2Config, config_path: str = "the config", log_fn=None) -> dict:
    """Build (or finish) the cache of ``config`` in ``config.data.cache``; returns the index."""
    from .build import build_dataset, collate_fn
    from .stages import STAGE_CLASSES

    say = log_fn or log.info
    if not config.data.cache:
        raise ConfigError("config field 'data.cache' is empty: name the folder to build the clip cache in")
    folder = Path(config.data.cache)
    key = cache_key(config)
    index = read_index(folder)
    if index is not None:
        check_key(folder, index, key, config_path)
        if index["clips"] >= clips_needed(index, key) and (index["complete"] or not key["data"].get("root")):
            say(f"cache {folder}: complete already ({index['clips']} clips; this config reads "
                f"{clips_needed(index, key)})")
            return index
    # The dataset before any file is written: a video folder without a usable clip raises InputError (with
    # each clip's reason) here instead of leaving an empty cache behind.
    dataset, collate = build_dataset(config.data), collate_fn()
    source = dataset_source(dataset)
    total = len(dataset)
    if index is None:
        folder.mkdir(parents=True, exist_ok=True)
        index = {"format": CACHE_FORMAT, "version": CACHE_VERSION, "key": key, "clips": 0, "total": total,
                 "shard_size": SHARD_SIZE, "shards": [], "complete": False, "source": source}
        _write_json(folder / INDEX_FILE, index)
    elif index["shards"] and index.get("source", {}).get("items_sha256") != source.get("items_sha256"):
        raise CacheError(f"clip cache '{folder}' was started on other samples of '{config.data.root}' (its clips "
                         f"changed since: {index.get('source', {}).get('samples')} samples then, {total} now), so "
                         "the cached items would not line up; delete the folder (or pick a new data.cache) and "
                         "rebuild")
    if index["total"] < total:  # generated data with more samples: keep the clips built, add the rest
        if "frozen_retargeter" in index["key"] and "frozen_retargeter" not in key:
            raise CacheError(f"clip cache '{folder}' holds a frozen retargeter's motion maps, which this config "
                             f"(retarget_trainable true) does not compute, so its new clips would lack them: grow it "
                             f"with the config it was built with and a larger data.num_samples, or build this "
                             f"config's cache in a new folder (data.cache)")
        say(f"cache {folder}: growing from {index['total']} to {total} clips")
        index.update(key=key, total=total, complete=False)
        _write_json(folder / INDEX_FILE, index)
    if source.get("skipped"):
        say(f"cache {folder}: {len(source['skipped'])} clip(s) skipped (reasons in {INDEX_FILE} 'source.skipped'); "
            f"first: {next(iter(source['skipped'].items()))}")
    if config.cpu_threads > 0:
        torch.set_num_threads(config.cpu_threads)
    torch.manual_seed(config.seed)
    stage = STAGE_CLASSES[stage_name](config)
    stage.to(torch.device("cpu"))
    done = first_new = sum(s["count"] for s in index["shards"])
    start = time.perf_counter()
    while done < total:
        count = min(index["shard_size"], total - done)
        batch = collate([dataset[i] for i in range(done, done + count)])
        fields = {k: v.contiguous().cpu() for k, v in stage.cached_fields(batch).items()}
        name = f"shard_{len(index['shards']):06d}.safetensors"
        tmp = folder / f".{name}.tmp"
        save_file(fields, str(tmp), metadata={"first": str(done), "count": str(count)})
        os.replace(tmp, folder / name)
        index["shards"].append({"file": name, "first": done, "count": count})
        done += count
        index["clips"] = done
        index["complete"] = done >= total
        # clips whose frames failed to decode only now (VideoFolder skips them then) are counted too
        index["source"] = {**index.get("source", {}), **dataset_source(dataset)}
        _write_json(folder / INDEX_FILE, index)
        rate = (done - first_new) / max(time.perf_counter() - start, 1e-9)  # the clips built by this run
        say(f"cache {folder}: {done}/{total} clips ({rate:.2f} clips/s)")
    return index


class CachedClips(Dataset):
    """The clips of a complete cache folder built for ``key`` (cache_key of the training config). Item i:
    the fields ``Stage.cached_fields`` stored for dataset item i (one clip, no batch axis)."""

    def __init__(self, folder: str | Path, key: dict, config_path: str = "the config"):
        self.folder = Path(folder)
        index = read_index(self.folder)
        if index is None:
            raise CacheError(f"config field 'data.cache': no clip cache in '{self.folder}'; build it first "
                             f"(python -m im_animation_core.train cache --config {config_path})")
        check_key(self.folder, index, key, config_path)
        need = clips_needed(index, key)
        if index["clips"] < need:
            raise CacheError(f"clip cache '{self.folder}' is unfinished ({index['clips']} of {need} clips); rerun "
                             f"the cache command to finish it (python -m im_animation_core.train cache --config "
                             f"{config_path})")
        self.shards, self.clips, self.shard_size = index["shards"], need, index["shard_size"]
        self._firsts = [shard["first"] for shard in self.shards]
        missing = [s["file"] for s in self.shards if not (self.folder / s["file"]).is_file()]
        if missing:
            raise CacheError(f"clip cache '{self.folder}' lists shard(s) that are gone ({', '.join(missing[:3])}); "
                             "delete the folder and rebuild it")
        self._open: dict[int, Any] = {}

    def __len__(self) -> int:
        return self.clips

    def _shard(self, k: int):
        if k not in self._open:
            self._open[k] = safe_open(str(self.folder / self.shards[k]["file"]), framework="pt")
        return self._open[k]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not 0 <= index < self.clips:
            raise IndexError(f"clip {index} out of range for a cache of {self.clips}")
        # a grown cache may hold a short shard before the last (the one its first build ended with)
        k = bisect.bisect_right(self._firsts, index) - 1
        row = index - self.shards[k]["first"]
        f = self._shard(k)
        return {name: f.get_slice(name)[row] for name in f.keys()}

    def __getstate__(self):  # DataLoader workers open their own handles
        state = dict(self.__dict__)
        state["_open"] = {}
        return state


__all__ = ["CACHE_FORMAT", "CacheError", "CachedClips", "INDEX_FILE", "build_cache", "cache_key", "check_key",
           "dataset_source", "read_index", "retargeter_sha256"]
