"""FSDP2 sharding and sharded checkpoints for the trainer (``strategy: "fsdp"``).

Sharding (PyTorch FSDP2, ``torch.distributed.fsdp.fully_shard``): one unit per Wan DiT block, then the root
(the stage's model: motion encoder, IMAnimationModules, the DiT's embeddings and head, the motion patch the
modules and the DiT share). Every rank keeps 1/N of each parameter, its gradient and its AdamW state, all in
float32 (the master weights); with ``mixed_precision: "bf16"`` on CUDA a unit's parameters are gathered in
bfloat16 for compute and gradients are reduce-scattered in float32 (``MixedPrecisionPolicy``). On CPU
(gloo, the tests) everything stays float32, so a sharded run can be compared with one process.

Checkpoints (``torch.distributed.checkpoint``, DCP): every rank writes its shards of the model and of the
optimiser under ``step_XXXXXXXX/dcp/``; DCP reshards on load, so a checkpoint of N ranks resumes on M ranks,
or in one process without a process group (nothing sharded then, the same files).

The exported files are those of an unsharded run: the full state dict is gathered to rank 0 (on the CPU),
whose model then holds it as plain CPU parameters for the stage's own export (the run is over by then).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from safetensors import safe_open
from torch import nn

from ..errors import CheckpointError
from ..wan.model import WanBlock
from .config import ConfigError

log = logging.getLogger(__name__)

DCP_DIR = "dcp"
MODEL_KEY = "model"
OPTIM_KEY = "optim"


def shard_model(model: nn.Module, device: torch.device, bf16: bool) -> nn.Module:
    """Shard ``model`` in place over the default process group: ``fully_shard`` on every WanBlock, then on
    the root. ``bf16``: gather parameters in bfloat16, reduce gradients in float32 (only meaningful on CUDA).
    All parameters must be float32 (the master weights). Returns the model (now an FSDPModule)."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    dtypes = {p.dtype for p in model.parameters()}
    if dtypes != {torch.float32}:
        raise ConfigError(f"strategy 'fsdp' keeps float32 master weights, but the model has parameters in "
                          f"{sorted(str(d) for d in dtypes)}: set dit.dtype to float32 (mixed_precision 'bf16' "
                          f"computes in bfloat16)")
    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    mp = (MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if bf16
          else MixedPrecisionPolicy())
    blocks = [m for m in model.modules() if isinstance(m, WanBlock)]
    for block in blocks:
        # resharded after forward: at 5B a gathered block is 0.3 GB in bf16; the backward gathers it again
        fully_shard(block, mesh=mesh, mp_policy=mp, reshard_after_forward=True)
    # The root's parameters (embeddings, head, modules, encoder) are needed again right at the start of the
    # backward: keep them gathered between forward and backward.
    fully_shard(model, mesh=mesh, mp_policy=mp, reshard_after_forward=False)
    log.info("fsdp: %d block unit(s) + root over %d rank(s), %s compute", len(blocks), dist.get_world_size(),
             "bf16" if bf16 else "fp32")
    return model


def is_sharded(model: nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def grad_norm_value(norm: torch.Tensor) -> torch.Tensor:
    """clip_grad_norm_'s result as a plain tensor (a DTensor on sharded parameters)."""
    full = getattr(norm, "full_tensor", None)
    return full() if full is not None else norm


# ---- full state dict and export ----------------------------------------------------------------------------
def full_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The unsharded state dict on the CPU, on rank 0 (collective: every rank must call it; the others get
    an empty dict). A model that is not sharded gives its own state dict."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def unshard_for_export_(model: nn.Module, full: dict[str, torch.Tensor], device: torch.device) -> None:
    """Replace the sharded parameters of ``model`` by plain ones holding ``full`` (from ``full_state_dict``),
    keeping shared parameters shared (the motion patch of the modules and the DiT). For the export at the end
    of a run on rank 0: the model must not train or run sharded afterwards."""
    replaced: dict[int, nn.Parameter] = {}
    for prefix, module in model.named_modules(remove_duplicate=False):
        for name, param in list(module._parameters.items()):
            if param is None:
                continue
            if id(param) not in replaced:
                key = f"{prefix}.{name}" if prefix else name
                if key not in full:
                    raise CheckpointError(f"the gathered state dict has no '{key}'")
                replaced[id(param)] = nn.Parameter(full[key].to(device), requires_grad=param.requires_grad)
            # bypass nn.Module.__setattr__ (FSDP's module classes), as FSDP itself swaps parameters
            module._parameters[name] = replaced[id(param)]


# ---- sharded checkpoints -----------------------------------------------------------------------------------
def _state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict

    return {MODEL_KEY: get_model_state_dict(model), OPTIM_KEY: get_optimizer_state_dict(model, optimizer)}


def save_sharded(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Every rank writes its shards of the model and the optimiser under ``path`` (collective)."""
    dcp.save(_state(model, optimizer), checkpoint_id=str(path))


def load_sharded(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Load a ``save_sharded`` checkpoint of any world size into ``model`` / ``optimizer`` (collective)."""
    from torch.distributed.checkpoint.state_dict import set_model_state_dict, set_optimizer_state_dict

    state = _state(model, optimizer)  # the layout to load into (this run's sharding)
    dcp.load(state, checkpoint_id=str(path))
    set_model_state_dict(model, state[MODEL_KEY])
    set_optimizer_state_dict(model, optimizer, state[OPTIM_KEY])


def saved_shapes_dcp(path: Path) -> dict[str, tuple[int, ...]]:
    """{parameter name: full shape} of the model in a DCP checkpoint (read from its metadata only)."""
    meta = dcp.FileSystemReader(str(path)).read_metadata()
    prefix = MODEL_KEY + "."
    return {k[len(prefix):]: tuple(v.size) for k, v in meta.state_dict_metadata.items()
            if k.startswith(prefix) and hasattr(v, "size")}


def saved_shapes_safetensors(path: Path) -> dict[str, tuple[int, ...]]:
    with safe_open(str(path), framework="pt") as f:
        return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118 (safe_open is no dict)


def model_shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    """{name: full shape} of the model's state dict (a DTensor's shape is the unsharded one)."""
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def shared_names(model: nn.Module) -> dict[str, set[str]]:
    """{name: the other names of the same parameter} (a shared parameter is saved once by safetensors)."""
    by_id: dict[int, set[str]] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        by_id.setdefault(id(p), set()).add(name)
    return {n: names - {n} for names in by_id.values() for n in names if len(names) > 1}


def check_same_shapes(saved: dict[str, tuple[int, ...]], current: dict[str, tuple[int, ...]], where: Path,
                      aliases: dict[str, set[str]] | None = None) -> None:
    """Raise CheckpointError naming the sizes when the checkpoint's tensors differ from the model's.
    ``aliases`` (``shared_names``): a name missing from the checkpoint is fine when another name of the same
    parameter is there."""
    aliases = aliases or {}
    differing = [k for k in sorted(set(saved) & set(current)) if saved[k] != current[k]]
    missing = sorted(k for k in set(current) - set(saved) if not aliases.get(k, set()) & set(saved))
    extra = sorted(set(saved) - set(current))
    if not (differing or missing or extra):
        return

    def count(shapes: dict[str, tuple[int, ...]]) -> int:
        return sum(int(torch.Size(s).numel()) for s in shapes.values())

    parts = [f"{k}: checkpoint {list(saved[k])}, this model {list(current[k])}" for k in differing[:4]]
    if missing:
        parts.append(f"{len(missing)} tensor(s) of this model not in the checkpoint (e.g. {missing[0]})")
    if extra:
        parts.append(f"{len(extra)} tensor(s) of the checkpoint not in this model (e.g. {extra[0]})")
    raise CheckpointError(f"cannot resume from '{where}': it holds a model of another size ({count(saved):,} "
                          f"parameters, this model {count(current):,}). {'; '.join(parts)}. Resume with the "
                          f"checkpoint's config.json (its dit / modules / tokenizer sizes), or start a new run.")
