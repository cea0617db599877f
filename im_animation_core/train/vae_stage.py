"""``python -m im_animation_core.train vae --config cfg.json``: train the small Wan2.1-architecture VAE.

The paper fine-tunes with Wan2.2's own VAE; small models need one of their own (the released VAEs have
48/16 latent channels at widths a CPU cannot train with), so this entry trains ``wan.vae.WanVAE`` on the
synthetic clips with ``vae_train.train_vae`` and writes a file ComfyUI's stock Load VAE reads.

Config (JSON): ``output`` (the .safetensors to write), ``steps``, ``batch_size``, ``data`` (DataConfig
fields; the driving and target clips of each synthetic pair are both used), ``eval`` ({"count", "seed"}:
held-out clips scored every ``eval_every`` steps), ``init`` (a VAE file to continue from: weights only;
the optimiser restarts; a ``train.vae.dim`` that is a multiple of its width widens it first, ``vae_widen``),
``train`` (VAETrainConfig fields, e.g. {"vae": {"dim": 8}, "lr": 1e-3}), ``crop``
(train on random crop x crop windows of the clips, a multiple of 8; 0 = whole frames; held-out clips are
always scored whole).
The log goes to ``metrics.jsonl`` beside ``output``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ..data import SyntheticPairs
from ..data.pairs import item_generator
from ..wan.vae import load_wan_vae
from .config import ConfigError, DataConfig
from .vae_train import VAETrainConfig, train_vae
from .vae_widen import widen_wan_vae


@dataclass(kw_only=True)
class VAEStageConfig:
    output: str
    steps: int = 1000
    batch_size: int = 4
    eval_every: int = 250
    data: DataConfig = field(default_factory=lambda: DataConfig(frames=5, size=64, num_samples=1_000_000))
    eval: dict = field(default_factory=lambda: {"count": 8, "seed": 1234})
    init: str | None = None
    train: VAETrainConfig = field(default_factory=VAETrainConfig)
    cpu_threads: int = 1  # torch intra-op threads, as the stages' field of that name (0: torch's default)
    # Random square windows of the frames: the convolutions learn the domain's scale (limb widths, faces) and
    # the causal time handling of long clips at a fraction of the cost of whole 128-pixel frames.
    crop: int = 0

    @classmethod
    def from_dict(cls, d: dict) -> VAEStageConfig:
        d = dict(d)
        unknown = set(d) - {f for f in cls.__dataclass_fields__}
        if unknown:
            raise ConfigError(f"unknown VAE config fields {sorted(unknown)}")
        if "output" not in d:
            raise ConfigError("the VAE config needs 'output': the .safetensors file to write")
        crop = d.get("crop", 0)
        if not isinstance(crop, int) or isinstance(crop, bool) or crop < 0 or crop % 8:
            raise ConfigError(f"VAE config field 'crop' must be 0 or a positive multiple of 8, got {crop!r}")
        try:
            d["data"] = DataConfig(**d.get("data", {}))
            d["train"] = VAETrainConfig(**d.get("train", {}))
            return cls(**d)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"VAE config: {e}") from e

    def to_dict(self) -> dict:
        out = asdict(self)
        out["train"] = self.train.to_dict()
        return out


def _clips(cfg: VAEStageConfig) -> Iterator[torch.Tensor]:
    """Batches [B,T,H,W,3] in [0,1]: driving and target clips of consecutive synthetic pairs."""
    d = cfg.data
    if d.kind != "synthetic":
        raise ConfigError("the VAE trainer reads synthetic data only (data.kind 'synthetic')")
    ds = SyntheticPairs(d.split, d.num_samples, d.frames, d.size, d.seed, **d.options)
    pending = []
    for i in range(len(ds)):
        item = ds[i]
        pending += [random_crop(item["driving"], cfg.crop, (d.seed, i, 0)),
                    random_crop(item["target"], cfg.crop, (d.seed, i, 1))]
        if len(pending) >= cfg.batch_size:
            yield torch.stack(pending[:cfg.batch_size])
            pending = pending[cfg.batch_size:]


def random_crop(clip: torch.Tensor, size: int, key: tuple) -> torch.Tensor:
    """clip [T,H,W,3] -> a size x size window of it at a position drawn from ``key`` (the whole clip for 0)."""
    if not size:
        return clip
    h, w = clip.shape[1:3]
    if size > min(h, w):
        raise ConfigError(f"VAE config field 'crop' ({size}) is larger than the frames ({h}x{w})")
    g = item_generator("vae-crop", *key)
    y = int(torch.randint(h - size + 1, (), generator=g))
    x = int(torch.randint(w - size + 1, (), generator=g))
    return clip[:, y:y + size, x:x + size]


def heldout_clips(cfg: VAEStageConfig) -> list[torch.Tensor]:
    d = cfg.data
    ds = SyntheticPairs("heldout", int(cfg.eval.get("count", 8)), d.frames, d.size, int(cfg.eval.get("seed", 1234)),
                        **d.options)
    return [ds[i]["target"].unsqueeze(0) for i in range(len(ds))]


def _widened(model, cfg: VAEStageConfig, log):
    """The init VAE widened to train.vae.dim when that is a multiple of its width and the other sizes agree."""
    have, want = model.config.to_dict(), cfg.train.vae.to_dict()
    factor = want["dim"] // have["dim"]
    if {**have, "dim": 0} != {**want, "dim": 0} or factor < 2 or want["dim"] % have["dim"]:
        raise ConfigError(f"init VAE '{cfg.init}' has sizes {have}, the config asks for {want}; fix train.vae or "
                          f"init (only a width train.vae.dim that is a multiple of the init's is allowed: widening)")
    log(f"widening the init VAE from dim {have['dim']} to {want['dim']} (same encode and decode up to the "
        f"symmetry-breaking noise)")
    return widen_wan_vae(model, factor, noise=1e-3, seed=cfg.train.seed)


def run_vae(cfg: VAEStageConfig, log=print) -> dict:
    """Train and save; returns {"output", "steps", "eval_psnr"}."""
    if cfg.cpu_threads:
        torch.set_num_threads(cfg.cpu_threads)
    out = Path(cfg.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    model = load_wan_vae(cfg.init) if cfg.init else None
    if model is not None and model.config.to_dict() != cfg.train.vae.to_dict():
        model = _widened(model, cfg, log)
    metrics = out.parent / "metrics.jsonl"
    with open(metrics, "a", encoding="utf-8") as f:
        f.write(json.dumps({"config": cfg.to_dict()}) + "\n")

        def write(rec: dict) -> None:
            f.write(json.dumps(rec) + "\n")
            f.flush()
        _, history = train_vae(cfg.train, _clips(cfg), cfg.steps, out, log=log, model=model,
                               eval_clips=heldout_clips(cfg), eval_every=cfg.eval_every,
                               callback=lambda step, m, rec: rec is not None and write(rec))
    last = [h for h in history if "eval_psnr" in h]
    return {"output": str(out), "steps": history[-1]["step"] if history else 0,
            "eval_psnr": last[-1]["eval_psnr"] if last else None}
