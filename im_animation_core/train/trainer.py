"""The training loop shared by the three stages: data order, DDP, AdamW, checkpoints, resume, logging.

Determinism: every random draw (flow-matching sigma and noise, augmentation) comes from a generator seeded
by (seed, step, sample index), and the data of step k is a pure function of (seed, k) (DistributedSampler's
per-epoch permutation; N processes split the same global batch a single process would take). A run resumed
from the checkpoint of step k continues exactly as the uninterrupted run would have, and a DDP run computes
what one process with the global batch computes (up to the order of floating-point sums).

Layout of ``output_dir``:
    config.json                  the resolved config of the run
    metrics.jsonl                one JSON line per log_every steps (losses, lr, grad norm, speed)
    checkpoints/step_XXXXXXXX/   model.safetensors (all weights of the trained modules), state.pt
                                 (optimiser, scheduler, step, RNG; read with torch.load(weights_only=True)),
                                 config.json; with strategy "fsdp": dcp/ (model and optimiser shards,
                                 torch.distributed.checkpoint, fsdp.py) in place of the weights and the
                                 optimiser, state.pt with scheduler, step and RNG
    checkpoints/latest           name of the newest checkpoint
    <stage outputs>              written at the end (see stages.py), listed in outputs.json (outputs.py)
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import random
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from safetensors.torch import load_model, save_model
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from ..errors import IMAnimationError
from . import fsdp
from .build import augment_fn, build_dataset, collate_fn
from .config import CONFIG_CLASSES, CommonConfig, ConfigError, config_from_dict, config_to_dict, diff_configs
from .outputs import write_run_outputs
from .schedule import lr_factor
from .stages import STAGE_CLASSES, Stage
from .targets import mix_seed

log = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
LATEST = "latest"
STATE_FILE = "state.pt"
WEIGHTS_FILE = "model.safetensors"
METRICS_FILE = "metrics.jsonl"
# Below this token_spread (encoders.token_spread) the motion encoder says the same for every frame. A
# healthy demo tokenizer sits near 0.17; the Stage-2 runs that collapsed its codebook fell to 5e-5.
COLLAPSED_TOKEN_SPREAD = 1e-3


class TrainingError(IMAnimationError):
    """A run that cannot go on (non-finite loss, unusable checkpoint, too little data)."""


# ---- distributed ----------------------------------------------------------------------------------------------
@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    initialised_here: bool = False

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device_kind: str) -> DistInfo:
    """Join the process group torchrun describes in the environment (RANK, WORLD_SIZE, LOCAL_RANK,
    MASTER_ADDR/PORT); NCCL on CUDA, gloo on CPU. One process without those variables: no DDP. A process
    group that already exists (a caller's, possibly of one process) is used as it is."""
    if dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")), False)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    backend = "nccl" if device_kind == "cuda" else "gloo"
    dist.init_process_group(backend, timeout=timedelta(minutes=30))
    return DistInfo(rank, world, local, True)


def _device(config: CommonConfig, info: DistInfo) -> torch.device:
    kind = config.device
    if kind == "auto":
        kind = "cuda" if torch.cuda.is_available() else "cpu"
    if kind.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError("config field 'device' asks for CUDA but no CUDA device is available")
        index = info.local_rank if kind == "cuda" else int(kind.split(":")[1])
        torch.cuda.set_device(index)
        return torch.device("cuda", index)
    return torch.device("cpu")


def _all_reduce(t: torch.Tensor, info: DistInfo, op=dist.ReduceOp.SUM) -> torch.Tensor:
    if info.enabled:
        dist.all_reduce(t, op=op)
    return t


def _barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


# ---- precision, kernels -----------------------------------------------------------------------------------------
def cpu_bf16_problem() -> str | None:
    """Why this CPU should not train in bfloat16 (None: it has bfloat16 matrix units, AVX512-BF16 or AMX, which
    oneDNN uses). Without them bfloat16 is emulated, slower than float32."""
    units = [name for name, check in (("AVX512-BF16", "_is_avx512_bf16_supported"), ("AMX", "_is_amx_tile_supported"))
             if getattr(torch.cpu, check, lambda: False)()]
    if not torch.backends.mkldnn.is_available():
        return "this torch build has no oneDNN, which runs bfloat16 matrix products on a CPU"
    if not units:
        return (f"this CPU has no bfloat16 matrix units (torch's CPU capability: "
                f"{torch.backends.cpu.get_cpu_capability()}; neither AVX512-BF16 nor AMX)")
    return None


def _optimizer_kwargs(implementation: str) -> dict[str, bool]:
    return {"foreach": {"foreach": True}, "fused": {"fused": True}}.get(implementation, {})


# ---- data ----------------------------------------------------------------------------------------------------
class _StepItems(Dataset):
    """Wraps the dataset: item (step, index) -> the sample (augmented with a generator seeded by
    (seed, step, index) when augmentation is on) plus its index."""

    def __init__(self, dataset: Any, seed: int, augment: Any):
        self.dataset, self.seed, self.augment = dataset, seed, augment

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Any]:
        step, index = key
        sample = self.dataset[index]
        if self.augment is not None:
            sample = self.augment(sample, torch.Generator().manual_seed(mix_seed(self.seed, 1, step, index)))
        return {**sample, "index": index}


class _StepBatches:
    """Batch sampler yielding [(step, index), ...] for steps start+1..end: the rank's share of the global
    batch of each step, in DistributedSampler's per-epoch order (epochs follow one another)."""

    def __init__(self, sampler: DistributedSampler, batch_size: int, start: int, end: int):
        self.sampler, self.batch_size, self.start, self.end = sampler, batch_size, start, end
        self.per_epoch = len(sampler) // batch_size

    def __len__(self) -> int:
        return self.end - self.start

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        step = self.start
        epoch, offset = divmod(step, self.per_epoch)
        while step < self.end:
            self.sampler.set_epoch(epoch)
            order = list(self.sampler)
            for k in range(offset, self.per_epoch):
                if step >= self.end:
                    return
                step += 1
                yield [(step, i) for i in order[k * self.batch_size:(k + 1) * self.batch_size]]
            epoch, offset = epoch + 1, 0


def _collate_with_index(collate: Any):
    def fn(items: list[dict[str, Any]]) -> dict[str, Any]:
        indices = [it.pop("index") for it in items]
        batch = collate(items)
        batch["index"] = torch.tensor(indices, dtype=torch.int64)
        return batch

    return fn


def _to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: (v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) and k != "index" else v)
            for k, v in batch.items()}


# ---- checkpoints -----------------------------------------------------------------------------------------
def _with_defaults(stage: str, saved: dict) -> dict:
    """A checkpoint's config with the fields added since it was written set to their defaults (each new field's
    default keeps the old behaviour), so it resumes; a config this code cannot read is compared as written."""
    try:
        return config_to_dict(config_from_dict(stage, saved))
    except ConfigError:
        return saved


def _rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": {"key": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                       "has_gauss": int(np_state[3]), "gauss": float(np_state[4])}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint directory from --resume: the directory itself, or the newest under a run directory."""
    path = Path(path)
    if (path / STATE_FILE).is_file():
        return path
    for base in (path / CHECKPOINTS, path):
        latest = base / LATEST
        if latest.is_file():
            candidate = base / latest.read_text(encoding="utf-8").strip()
            if (candidate / STATE_FILE).is_file():
                return candidate
        steps = sorted(p for p in base.glob("step_*") if (p / STATE_FILE).is_file()) if base.is_dir() else []
        if steps:
            return steps[-1]
    raise TrainingError(f"no checkpoint to resume from in '{path}': give a run's output directory or one of its "
                        f"checkpoints/step_* directories")


# ---- the loop --------------------------------------------------------------------------------------------
@dataclass
class TrainResult:
    step: int
    output_dir: Path
    files: dict[str, str]
    last_losses: dict[str, float]


class Trainer:
    """Runs one stage. ``dataset`` / ``vae`` / ``collate`` replace what the config would build (tests,
    notebooks); ``augment`` replaces the dataset package's ``augment_pair``."""

    def __init__(self, stage: str, config: CommonConfig, *, dataset: Any = None, vae: Any = None,
                 collate: Any = None, augment: Any = None):
        if stage not in STAGE_CLASSES:
            raise ConfigError(f"unknown stage '{stage}'; choose one of {', '.join(STAGE_CLASSES)}")
        if not isinstance(config, CONFIG_CLASSES[stage]):
            raise ConfigError(f"{stage} needs a {CONFIG_CLASSES[stage].__name__}, got {type(config).__name__}")
        self.stage_name, self.config = stage, config
        if config.cpu_threads > 0:
            torch.set_num_threads(config.cpu_threads)
        kind = "cuda" if config.device.startswith("cuda") or (config.device == "auto"
                                                                 and torch.cuda.is_available()) else "cpu"
        self.info = init_distributed(kind)
        self.device = _device(config, self.info)
        self.output_dir = Path(config.output_dir)
        self.autocast_dtype = self._resolve_precision()
        torch.manual_seed(config.seed)  # fresh weights: the same on every rank (DDP also broadcasts rank 0's)
        self.stage: Stage = STAGE_CLASSES[stage](config, vae=vae)
        self.stage.to(self.device)
        self.model = self.stage.model
        self.dataset = dataset
        self.collate = collate
        self.augment = augment
        self._data_init()
        self.ddp: nn.Module = self.model
        # FSDP replaces the parameters by sharded ones: shard before the optimiser takes them. Any process
        # group shards (torchrun's, or a caller's of one process); a plain process trains the model unsharded.
        self.sharded = config.strategy == "fsdp" and dist.is_initialized()
        if self.sharded:
            fsdp.shard_model(self.model, self.device,
                             bf16=config.mixed_precision == "bf16" and self.device.type == "cuda")
        groups = [g for g in self.stage.param_groups() if g["params"]]
        if not groups:
            raise ConfigError(f"{stage}: no parameter is trainable with this config")
        o = config.optim
        self.optimizer = self._make_optimizer(groups)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda k: lr_factor(k, o.warmup_steps, o.decay_steps, config.steps))
        self.step = 0
        self.compiled: list[nn.Module] = []
        if config.compile:
            self._compile()
        self._collapse_warned = False
        if self.info.enabled and not self.sharded:
            self.ddp = DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=True)

    # -- helpers --
    def _data_init(self) -> None:
        """Inits fitted to data (a stage's ``data_init``) see the dataset's first pairs, unaugmented: the same on
        every rank, before DDP wraps the model. A resumed run then loads its checkpoint over them."""
        count = getattr(self.stage, "data_init_pairs", 0)
        if not count:
            return
        self._ensure_data()
        items = [self.dataset[i] for i in range(min(count, len(self.dataset)))]
        self.stage.data_init(_to_device(self.collate(items), self.device))

    def _resolve_precision(self) -> torch.dtype | None:
        """The autocast dtype of mixed_precision on this device (None: float32), saying in one log line why a
        CPU that cannot run bfloat16 well trains in float32 instead."""
        if self.config.mixed_precision != "bf16":
            return None
        if self.device.type == "cpu":
            problem = cpu_bf16_problem()
            if problem:
                log.warning("%s: mixed_precision 'bf16' asked for, but %s: training in float32", self.stage_name,
                            problem)
                return None
        return torch.bfloat16

    def _autocast(self):
        if self.autocast_dtype is not None:
            return torch.autocast(self.device.type, dtype=self.autocast_dtype)
        return contextlib.nullcontext()

    def _make_optimizer(self, groups: list[dict]) -> torch.optim.Optimizer:
        o = self.config.optim
        kwargs = dict(lr=o.lr, betas=tuple(o.betas), eps=o.eps, weight_decay=o.weight_decay)
        extra = _optimizer_kwargs(o.implementation)
        try:
            return torch.optim.AdamW(groups, **kwargs, **extra)
        except (RuntimeError, TypeError, ValueError) as e:  # e.g. a torch without fused AdamW for this device
            if not extra:
                raise
            log.warning("%s: optim.implementation '%s' is not available here (%s): using torch's default AdamW",
                        self.stage_name, o.implementation, str(e).splitlines()[0] if str(e) else type(e).__name__)
            return torch.optim.AdamW(groups, **kwargs)

    def _compile(self) -> None:
        """torch.compile the stage's compile targets in place (their forward; the weights and state-dict keys
        stay those of the module). Compiling happens at their first call, see ``_compiled_or_eager``."""
        for module in self.stage.compile_targets():
            module.forward = torch.compile(module.forward)
            self.compiled.append(module)

    def _uncompile(self, error: Exception) -> None:
        for module in self.compiled:
            del module.forward  # the class's eager forward again
        self.compiled = []
        torch._dynamo.reset()
        first = str(error).strip().splitlines()
        log.warning("%s: compile is on, but torch.compile failed on this machine (%s: %s): training eager",
                    self.stage_name, type(error).__name__, first[0][:300] if first else "no message")

    def _compiled_or_eager(self, fn, *args):
        """fn(*args), compiled; when compiling fails, once more eager (with compile off from then on). Errors
        of the project (non-finite loss, bad input) are not compile failures: they are raised as they are,
        and an eager rerun would raise any other genuine error again."""
        if not self.compiled:
            return fn(*args)
        try:
            return fn(*args)
        except IMAnimationError:
            raise
        except Exception as e:  # noqa: BLE001 - whatever dynamo, inductor or the C++ toolchain raised
            self._uncompile(e)
        return fn(*args)

    def _ensure_data(self) -> None:
        """Build the dataset and collate function from the config unless they were passed in."""
        if self.dataset is None and self.config.data.cache:
            from .cache import CachedClips, cache_key

            self.dataset = CachedClips(self.config.data.cache, cache_key(self.config))
        if self.dataset is None:
            self.dataset = build_dataset(self.config.data)
        if self.collate is None:
            self.collate = collate_fn()

    def _loader(self, start: int, end: int) -> DataLoader:
        c = self.config
        self._ensure_data()
        augment = None
        if c.data.augment:
            if self.augment is None:
                self.augment = augment_fn(c.data)
            augment = self.augment
        n = len(self.dataset)
        global_batch = c.batch_size * self.info.world_size
        if n < global_batch:
            raise TrainingError(f"the dataset has {n} sample(s), fewer than one global batch ({c.batch_size} x "
                                f"{self.info.world_size} process(es)); add data or lower batch_size")
        sampler = DistributedSampler(range(n), num_replicas=self.info.world_size, rank=self.info.rank,
                                     shuffle=True, seed=c.seed, drop_last=True)
        return DataLoader(_StepItems(self.dataset, c.seed, augment),
                          batch_sampler=_StepBatches(sampler, c.batch_size, start, end),
                          collate_fn=_collate_with_index(self.collate), num_workers=c.data.num_workers,
                          pin_memory=self.device.type == "cuda", persistent_workers=False)

    def compute_losses(self, batch: dict[str, Any], step: int) -> dict[str, torch.Tensor]:
        """The stage's losses of one (collated, CPU) batch, with the random draws of ``step``."""
        batch = self.stage.prepare(_to_device(batch, self.device))
        with self._autocast():
            return self.ddp(batch, mix_seed(self.config.seed, 2, step))

    @torch.no_grad()
    def evaluate(self, batch: dict[str, Any], seed_step: int = 0) -> dict[str, float]:
        """Losses of a batch without training (eval mode, no gradient), with the draws of ``seed_step``."""
        was = self.model.training
        self.model.eval()
        try:
            batch = self.stage.prepare(_to_device(batch, self.device))
            out = self._compiled_or_eager(self._eval_forward, batch, seed_step)
        finally:
            self.model.train(was)
        return {k: float(v) for k, v in out.items()}

    def _eval_forward(self, batch: dict[str, Any], seed_step: int) -> dict[str, torch.Tensor]:
        with self._autocast():
            return self.model(batch, mix_seed(self.config.seed, 2, seed_step))

    # -- checkpoints --
    def save_checkpoint(self) -> Path | None:
        base = self.output_dir / CHECKPOINTS
        path = base / f"step_{self.step:08d}"
        tmp = base / f".tmp_step_{self.step:08d}"
        fsdp_format = self.config.strategy == "fsdp"
        if self.info.main:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        if fsdp_format:
            _barrier(self.info)  # the folder exists before any rank writes into it
            fsdp.save_sharded(tmp / fsdp.DCP_DIR, self.model, self.optimizer)  # every rank writes its shards
        if not self.info.main:
            _barrier(self.info)
            return None
        state: dict[str, Any] = {"step": self.step, "stage": self.stage_name, "world_size": self.info.world_size,
                                 "scheduler": self.scheduler.state_dict(), "rng": _rng_state()}
        if not fsdp_format:
            save_model(self.model, str(tmp / WEIGHTS_FILE),
                       metadata={"stage": self.stage_name, "step": str(self.step)})
            state["optimizer"] = self.optimizer.state_dict()
        torch.save(state, tmp / STATE_FILE)
        (tmp / "config.json").write_text(json.dumps(config_to_dict(self.config), indent=2), encoding="utf-8")
        shutil.rmtree(path, ignore_errors=True)
        tmp.rename(path)
        (base / LATEST).write_text(path.name, encoding="utf-8")
        kept = sorted(p for p in base.glob("step_*") if p.is_dir())
        for old in kept[:-self.config.keep_checkpoints]:
            shutil.rmtree(old, ignore_errors=True)
        _barrier(self.info)
        return path

    def load_checkpoint(self, path: str | Path) -> int:
        ckpt = resolve_checkpoint(path)
        saved_config = _with_defaults(self.stage_name, json.loads((ckpt / "config.json").read_text(encoding="utf-8")))
        state = torch.load(ckpt / STATE_FILE, map_location="cpu", weights_only=True)
        if state.get("stage") != self.stage_name:
            raise TrainingError(f"'{ckpt}' is a checkpoint of {state.get('stage')}, not of {self.stage_name}")
        sharded_ckpt = (ckpt / fsdp.DCP_DIR).is_dir()
        # another model size first: the message names the sizes (the config diff below would only name fields)
        saved_shapes = (fsdp.saved_shapes_dcp(ckpt / fsdp.DCP_DIR) if sharded_ckpt
                        else fsdp.saved_shapes_safetensors(ckpt / WEIGHTS_FILE))
        fsdp.check_same_shapes(saved_shapes, fsdp.model_shapes(self.model), ckpt, fsdp.shared_names(self.model))
        differing = diff_configs(saved_config, config_to_dict(self.config))
        if differing:
            raise TrainingError(f"cannot resume from '{ckpt}': it was made with another configuration. Differing "
                                f"field(s): {'; '.join(differing)}. Resume with the checkpoint's config.json (only "
                                f"steps, output_dir, logging/checkpoint cadence, data.num_workers and device may "
                                f"change), or start a new run.")
        if state.get("world_size", 1) != self.info.world_size:
            log.warning("resuming a %d-process run with %d processes: the data order from here on differs from "
                        "the original run's", state.get("world_size", 1), self.info.world_size)
        if sharded_ckpt:
            fsdp.load_sharded(ckpt / fsdp.DCP_DIR, self.model, self.optimizer)
        else:
            load_model(self.model, str(ckpt / WEIGHTS_FILE), strict=True, device=str(self.device))
            self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        _set_rng_state(state["rng"])
        self.step = int(state["step"])
        return self.step

    # -- metrics --
    def _metrics_path(self) -> Path:
        return self.output_dir / METRICS_FILE

    def _trim_metrics(self) -> None:
        """After a resume, drop log lines of steps after the checkpoint (an interrupted run wrote them)."""
        path = self._metrics_path()
        if not (self.info.main and path.is_file()):
            return
        keep = []
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                if json.loads(line).get("step", 0) <= self.step:
                    keep.append(line)
            except json.JSONDecodeError:
                continue
        path.write_text("".join(k + "\n" for k in keep), encoding="utf-8")

    # -- main --
    def train(self, resume: str | Path | None = None) -> TrainResult:
        c = self.config
        if self.info.main:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            (self.output_dir / "config.json").write_text(json.dumps(config_to_dict(c), indent=2), encoding="utf-8")
        if resume is not None:
            self.load_checkpoint(resume)
            self._trim_metrics()
            log.info("%s: resumed at step %d from %s", self.stage_name, self.step, resume)
        last: dict[str, float] = {}
        if self.step < c.steps:
            last = self._loop()
        skipped = getattr(self.dataset, "skipped", None)
        if skipped:
            log.warning("%s: %d clip(s) of the dataset were unreadable and skipped (in this process): %s",
                        self.stage_name, len(skipped), "; ".join(f"{k}: {v}" for k, v in list(skipped.items())[:5]))
        files: dict[str, str] = {}
        if self.sharded:  # gather on every rank; rank 0 exports the full weights as an unsharded run would
            full = fsdp.full_state_dict(self.model)
            if self.info.main:  # kept on the CPU: exporting computes nothing, and a 5B model is 22 GB in fp32
                fsdp.unshard_for_export_(self.model, full, torch.device("cpu"))
            del full
        if self.info.main:
            self.model.eval()
            files = self.stage.export(self.output_dir)
            write_run_outputs(self.output_dir, self.stage_name, self.step, files)
        _barrier(self.info)
        return TrainResult(self.step, self.output_dir, files, last)

    def _loop(self) -> dict[str, float]:
        c = self.config
        self.model.train()
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        loader = self._loader(self.step, c.steps)
        bar = None
        if c.progress and self.info.main:
            from tqdm.auto import tqdm

            bar = tqdm(total=c.steps, initial=self.step, desc=self.stage_name, dynamic_ncols=True)
        window: dict[str, float] = {}
        count = 0
        t0 = time.perf_counter()
        last: dict[str, float] = {}
        try:
            for batch in loader:
                step = self.step + 1
                losses, grad_norm = self.train_step(batch, step, params)
                self.step = step
                for k, v in losses.items():
                    window[k] = window.get(k, 0.0) + float(v.detach())
                window["grad_norm"] = window.get("grad_norm", 0.0) + float(grad_norm)
                count += 1
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{float(losses['loss'].detach()):.4g}")
                if step % c.log_every == 0 or step == c.steps:
                    last = self._log(window, count, time.perf_counter() - t0)
                    window, count, t0 = {}, 0, time.perf_counter()
                if step % c.save_every == 0 or step == c.steps:
                    self.save_checkpoint()
        finally:
            if bar is not None:
                bar.close()
        return last

    def train_step(self, batch: dict[str, Any], step: int, params: list[torch.Tensor]
                   ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """One optimizer step on a collated batch (``step``: its 1-based number, which seeds its draws); the
        scheduler steps too, ``self.step`` does not. Returns the losses and the gradient norm before clipping."""
        return self._compiled_or_eager(self._train_step, batch, step, params)

    def _train_step(self, batch: dict[str, Any], step: int, params: list[torch.Tensor]
                    ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        c = self.config
        losses = self.compute_losses(batch, step)
        loss = losses["loss"]
        self._check_finite(loss, step, batch["index"])
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = fsdp.grad_norm_value(torch.nn.utils.clip_grad_norm_(
            params, c.optim.grad_clip if c.optim.grad_clip > 0 else math.inf))
        self.optimizer.step()
        self.scheduler.step()
        return losses, grad_norm

    def _check_finite(self, loss: torch.Tensor, step: int, indices: torch.Tensor) -> None:
        bad = torch.tensor([0.0 if bool(torch.isfinite(loss.detach())) else 1.0], device=self.device)
        _all_reduce(bad, self.info, dist.ReduceOp.MAX)
        if float(bad) > 0:
            own = not bool(torch.isfinite(loss.detach()))
            where = (f"the batch of dataset sample(s) {indices.tolist()}" if own else
                     "a batch of another process (this process's loss was finite)")
            raise TrainingError(f"{self.stage_name}: the loss is {float(loss.detach())} at step {step}, on {where}. "
                                f"Training stopped; the last checkpoint holds the weights before it. Check those "
                                f"samples' frames and joints, or lower the learning rate.")

    def _log(self, window: dict[str, float], count: int, seconds: float) -> dict[str, float]:
        keys = sorted(window)
        t = torch.tensor([window[k] / max(count, 1) for k in keys], dtype=torch.float64, device=self.device)
        _all_reduce(t, self.info)
        values = {k: float(v) / self.info.world_size for k, v in zip(keys, t.tolist(), strict=True)}
        if self.info.main:
            record = {"step": self.step, **values,
                      **{f"lr_{g.get('name', i)}": g["lr"] for i, g in enumerate(self.optimizer.param_groups)},
                      "sec_per_step": seconds / max(count, 1), "time": time.time()}
            with open(self._metrics_path(), "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
            self._warn_collapse(values.get("token_spread"))
        return values

    def _warn_collapse(self, spread: float | None) -> None:
        if spread is None or spread >= COLLAPSED_TOKEN_SPREAD or self._collapse_warned:
            return
        self._collapse_warned = True
        log.warning("%s step %d: the motion tokens barely differ between frames (token_spread %.2g < %g): the "
                    "motion encoder has collapsed and carries no motion. Start from a healthy Stage-1 encoder and "
                    "keep it frozen (tokenizer.trainable false; conv_encoder.trainable false for the conv encoder) "
                    "or lower the learning rate.",
                    self.stage_name, self.step, spread, COLLAPSED_TOKEN_SPREAD)

    def close(self) -> None:
        if self.info.initialised_here and dist.is_initialized():
            dist.destroy_process_group()


def run(stage: str, config: CommonConfig, resume: str | Path | None = None, **overrides: Any) -> TrainResult:
    """Train ``stage`` with ``config`` (optionally resuming) and export its outputs."""
    trainer = Trainer(stage, config, **overrides)
    try:
        return trainer.train(resume)
    finally:
        trainer.close()
