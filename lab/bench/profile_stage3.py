"""Where a Stage-3 step's time goes on the machine it runs on (a GPU above all): the clips, or the step itself.

    python -m lab.bench.profile_stage3 --config configs/demo128/stage3_gpu1.json [--set KEY=VALUE ...]
                                   [--loader-batches 20] [--steps 10] [--profile-steps 3] [--json OUT]

Three figures, each from the trainer's own code (``Trainer._loader``, ``Trainer.train_step``):
- loader: seconds per batch of the config's DataLoader (its workers) iterated alone, after the first batch;
- step: seconds per optimizer step (forward, backward, clipping, AdamW) on one batch kept in memory, so no
  loading; timed over --steps steps after 2 warm-up steps, the device synchronised at both ends;
- the profiler's table of the step's operators over --profile-steps steps, and on CUDA the kernels per step
  and the device's busy share (the kernels' summed time over the steps' wall time).
If the loader's s/batch exceeds the step's s, the clips bound training (more workers, or a cache); if the step
alone leaves the device idle, the host bounds it (its launches and syncs: fewer, larger kernels). The weights
move during the timed steps (the optimizer runs), so run it on a copy of nothing that matters: it saves nothing.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from im_animation_core.train.__main__ import _apply_sets
from im_animation_core.train.config import config_from_dict
from im_animation_core.train.trainer import Trainer, _to_device

WARMUP = 2


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def loader_seconds(trainer: Trainer, batches: int) -> tuple[float, float, dict]:
    """(seconds to the first batch, seconds per batch after it, the first batch) of the trainer's DataLoader."""
    start = time.perf_counter()
    it = iter(trainer._loader(0, batches))
    first = next(it)
    t_first = time.perf_counter() - start
    start, n = time.perf_counter(), 0
    for _ in it:
        n += 1
    return t_first, (time.perf_counter() - start) / max(n, 1), first


def step_seconds(trainer: Trainer, batch: dict, steps: int) -> float:
    """Mean seconds per optimizer step over ``steps`` steps on one batch (after WARMUP steps)."""
    params = [p for g in trainer.optimizer.param_groups for p in g["params"]]
    trainer.model.train()
    for k in range(WARMUP):
        trainer.train_step(batch, k + 1, params)
    _sync(trainer.device)
    start = time.perf_counter()
    for k in range(steps):
        trainer.train_step(batch, WARMUP + k + 1, params)
    _sync(trainer.device)
    return (time.perf_counter() - start) / steps


def profile_steps(trainer: Trainer, batch: dict, steps: int, rows: int = 15) -> dict:
    """The operator table and, on CUDA, kernels per step and the device's busy share over ``steps`` steps."""
    from torch.profiler import ProfilerActivity, profile

    cuda = trainer.device.type == "cuda"
    params = [p for g in trainer.optimizer.param_groups for p in g["params"]]
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    _sync(trainer.device)
    with profile(activities=activities) as prof:
        start = time.perf_counter()
        for k in range(steps):
            trainer.train_step(batch, 100 + k, params)
        _sync(trainer.device)
        wall = time.perf_counter() - start
    averages = prof.key_averages()
    sort = "self_cuda_time_total" if cuda else "self_cpu_time_total"
    out = {"wall_s_per_step": wall / steps, "table": averages.table(sort_by=sort, row_limit=rows)}
    if cuda:
        kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
        busy_us = sum(e.self_device_time_total if hasattr(e, "self_device_time_total") else e.self_cuda_time_total
                      for e in kernels)
        out.update(kernels_per_step=len(kernels) / steps, device_busy=busy_us / 1e6 / wall)
    return out


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True, help="a Stage-3 config (.json)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field")
    ap.add_argument("--loader-batches", type=int, default=20)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--profile-steps", type=int, default=3)
    ap.add_argument("--json", help="write the figures here too")
    return ap


def main(argv: list[str] | None = None) -> dict:
    args = parser().parse_args(argv)
    data = _apply_sets(json.loads(Path(args.config).read_text()), args.set)
    with tempfile.TemporaryDirectory() as tmp:
        data["output_dir"] = tmp  # nothing is saved; the trainer only needs a folder
        config = config_from_dict("stage3", data)
        trainer = Trainer("stage3", config)
        t_first, s_batch, first = loader_seconds(trainer, args.loader_batches)
        batch = _to_device(first, trainer.device)
        s_step = step_seconds(trainer, batch, args.steps)
        prof = profile_steps(trainer, batch, args.profile_steps)
    device = (torch.cuda.get_device_name(trainer.device) if trainer.device.type == "cuda" else "cpu")
    report = {"config": args.config, "sets": args.set, "device": device, "torch": torch.__version__,
              "batch_size": config.batch_size, "num_workers": config.data.num_workers,
              "loader_first_batch_s": t_first, "loader_s_per_batch": s_batch, "step_s": s_step,
              "bound_by": "clips" if s_batch > s_step else "step", **{k: v for k, v in prof.items() if k != "table"}}
    print(prof["table"])
    print(json.dumps(report, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps({**report, "table": prof["table"]}, indent=2))
    return report


if __name__ == "__main__":
    main()
