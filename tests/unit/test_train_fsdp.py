"""FSDP2 training (strategy "fsdp"): torchrun launches two CPU processes (gloo) that train the tiny Stage 3 with
every DiT block sharded and checkpointed per block. They must compute what one unsharded process with the
whole global batch computes, write sharded checkpoints that one process resumes, export the full weights on
rank 0, and stop on a non-finite loss naming the step. A resume with another model size names the sizes."""

import json
import math
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from im_animation_core.errors import CheckpointError
from im_animation_core.train import Trainer, config_from_dict
from im_animation_core.train.presets import tiny_config_dict, tiny_vae, write_tiny_vae
from im_animation_core.train.stages import DIT_FILE, MODULES_FILE
from tools.torchrun import run_two_ranks

PROBE = "dit.blocks.0.ffn.0.weight"  # [256, 128] in the tiny DiT: 128 rows per rank

WORKER = """
import json, sys
import torch
from safetensors.torch import save_file
from im_animation_core.train import Trainer, TrainingError, config_from_dict
from im_animation_core.train.build import build_dataset


def main():
    cfg_path, out, probe = sys.argv[1:4]
    raw = json.load(open(cfg_path))
    trainer = Trainer("stage3", config_from_dict("stage3", raw))
    rank = trainer.info.rank
    params = dict(trainer.model.named_parameters())
    local = params[probe].to_local()
    info = {"world": trainer.info.world_size, "sharded": trainer.sharded, "probe_local_rows": local.shape[0],
            "dtensors": sum(hasattr(p, "to_local") for p in params.values()), "params": len(params)}
    trainer.train()
    opt_state = trainer.optimizer.state[params[probe]]
    save_file({"exp_avg": opt_state["exp_avg"].to_local().contiguous()}, f"{out}/optim{rank}.safetensors")
    if rank == 0:  # after train() rank 0 holds the gathered full weights
        save_file({k: v.detach().clone().contiguous() for k, v in trainer.model.state_dict().items()
                   if k != "dit.motion_patch.weight" and k != "dit.motion_patch.bias"}, f"{out}/full.safetensors")

    # A NaN in the target clip of rank 0's first sample: both ranks stop at step 1.
    POISON = list(torch.utils.data.DistributedSampler(range(8), num_replicas=2, rank=0, shuffle=True, seed=0))[0]
    class Poisoned(torch.utils.data.Dataset):
        def __init__(self, base):
            self.base = base
        def __len__(self):
            return len(self.base)
        def __getitem__(self, i):
            s = dict(self.base[i])
            if i == POISON:
                s["target"] = torch.full_like(torch.as_tensor(s["target"], dtype=torch.float32), float("nan"))
            return s

    nan_raw = {**raw, "output_dir": raw["output_dir"] + "_nan", "steps": 1, "save_every": 100}
    nan_cfg = config_from_dict("stage3", nan_raw)
    nan_trainer = Trainer("stage3", nan_cfg, dataset=Poisoned(build_dataset(nan_cfg.data)))
    try:
        nan_trainer.train()
        info["nan"] = "no error"
    except TrainingError as e:
        info["nan"] = str(e)
    info["poison"] = POISON
    json.dump(info, open(f"{out}/rank{rank}.json", "w"))
    trainer.close()

"""

pytestmark = pytest.mark.usefixtures("one_thread")


def losses(path):
    return [json.loads(line)["loss"] for line in Path(path).read_text().splitlines()]


@pytest.fixture(scope="module")
def fsdp_run(tmp_path_factory):
    """Two gloo processes: FSDP Stage 3 for 2 steps (batch 2 each), then a poisoned run; and one unsharded
    process with the global batch of 4."""
    tmp = tmp_path_factory.mktemp("fsdp")
    vae = write_tiny_vae(tmp / "vae.safetensors")
    common = dict(vae_path=vae, steps=2, log_every=1, save_every=2, cpu_threads=1, data={"num_samples": 8})
    cfg = tiny_config_dict("stage3", tmp / "fsdp", batch_size=2, strategy="fsdp",
                           dit={"gradient_checkpointing": True}, **common)
    (tmp / "cfg.json").write_text(json.dumps(cfg))
    done = run_two_ranks(WORKER, tmp, [str(tmp / "cfg.json"), str(tmp), PROBE])
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    single = config_from_dict("stage3", tiny_config_dict("stage3", tmp / "single", batch_size=4, **common))
    Trainer("stage3", single, vae=tiny_vae()).train()
    return tmp, cfg


def test_fsdp_shards_and_matches_one_process(fsdp_run):
    tmp, _ = fsdp_run
    info = [json.loads((tmp / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [i["world"] for i in info] == [2, 2] and all(i["sharded"] for i in info)
    assert all(i["dtensors"] == i["params"] for i in info)  # every parameter is sharded ...
    assert [i["probe_local_rows"] for i in info] == [128, 128]  # ... each rank holding half of a block's rows

    fsdp_losses, one_losses = losses(tmp / "fsdp" / "metrics.jsonl"), losses(tmp / "single" / "metrics.jsonl")
    assert len(fsdp_losses) == 2
    torch.testing.assert_close(fsdp_losses[0], one_losses[0], rtol=1e-5, atol=0)
    torch.testing.assert_close(fsdp_losses, one_losses, rtol=2e-3, atol=0)
    # The exported files (rank 0, gathered) are full-size and agree with the unsharded run's.
    for name, key in ((DIT_FILE, "blocks.0.ffn.0.weight"), (MODULES_FILE, "retarget.out.weight")):
        a, b = load_file(tmp / "fsdp" / name), load_file(tmp / "single" / name)
        assert a.keys() == b.keys()
        assert a[key].shape == b[key].shape
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=5e-4)
    assert not (tmp / "fsdp" / "checkpoints" / "step_00000002" / "model.safetensors").exists()
    assert (tmp / "fsdp" / "checkpoints" / "step_00000002" / "dcp" / ".metadata").is_file()


def test_nan_loss_stops_every_rank_with_step_and_batch(fsdp_run):
    tmp, _ = fsdp_run
    info = [json.loads((tmp / f"rank{r}.json").read_text()) for r in (0, 1)]
    messages = [i["nan"] for i in info]
    assert re.search(r"the loss is nan at step 1, on ", messages[0]), messages
    assert re.search(r"at step 1, on ", messages[1]), messages  # rank 1: its own loss, finite
    own = re.search(r"the batch of dataset sample\(s\) \[(\d+), (\d+)\]", messages[0])
    assert own and info[0]["poison"] in (int(own.group(1)), int(own.group(2))), messages[0]
    assert "a batch of another process (this process's loss was finite)" in messages[1]


def test_two_rank_checkpoint_resumes_in_one_process(fsdp_run, tmp_path):
    tmp, cfg = fsdp_run
    ckpt = tmp / "fsdp" / "checkpoints" / "step_00000002"
    resumed = config_from_dict("stage3", {**cfg, "output_dir": str(tmp_path / "resumed"), "steps": 3})
    trainer = Trainer("stage3", resumed, vae=tiny_vae())
    assert not trainer.sharded
    assert trainer.load_checkpoint(ckpt) == 2
    full = load_file(tmp / "full.safetensors")
    state = trainer.model.state_dict()
    for k, v in full.items():
        assert torch.equal(state[k], v), k
    # AdamW's moments come back whole: the two ranks' row shards, concatenated
    shards = [load_file(tmp / f"optim{r}.safetensors")["exp_avg"] for r in (0, 1)]
    probe = dict(trainer.model.named_parameters())[PROBE]
    torch.testing.assert_close(trainer.optimizer.state[probe]["exp_avg"], torch.cat(shards), rtol=0, atol=0)
    assert trainer.scheduler.last_epoch == 2
    result = trainer.train(resume=ckpt)
    assert result.step == 3 and (tmp_path / "resumed" / DIT_FILE).is_file()
    assert (tmp_path / "resumed" / "checkpoints" / "step_00000003" / "dcp").is_dir()


def test_resume_with_another_model_size_names_the_sizes(fsdp_run, tmp_path):
    tmp, cfg = fsdp_run
    bigger = {**cfg, "output_dir": str(tmp_path / "other"), "dit": {**cfg["dit"], "ffn_dim": 192}}
    trainer = Trainer("stage3", config_from_dict("stage3", bigger), vae=tiny_vae())
    with pytest.raises(CheckpointError, match=r"another size") as e:
        trainer.load_checkpoint(tmp / "fsdp")
    assert "checkpoint [256, 128], this model [192, 128]" in str(e.value)


def test_bf16_compute_keeps_float32_master_weights(tmp_path, monkeypatch):
    """mixed_precision "bf16" (CUDA only in the trainer; forced on here, with CPU autocast): the blocks compute
    with bfloat16 parameters gathered from float32 shards, and AdamW updates the float32 shards."""
    import socket

    import torch.distributed as dist

    from im_animation_core.train import fsdp
    from im_animation_core.train import trainer as trainer_module

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    for k, v in dict(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK="0", WORLD_SIZE="1").items():
        monkeypatch.setenv(k, v)
    dist.init_process_group("gloo")
    try:
        shard = fsdp.shard_model
        monkeypatch.setattr(trainer_module.fsdp, "shard_model", lambda model, device, bf16: shard(model, device, True))
        cfg = tiny_config_dict("stage3", tmp_path / "bf16", strategy="fsdp", steps=1, save_every=100,
                               dit={"gradient_checkpointing": True})
        trainer = Trainer("stage3", config_from_dict("stage3", cfg), vae=tiny_vae())
        monkeypatch.setattr(trainer, "_autocast", lambda: torch.autocast("cpu", dtype=torch.bfloat16))
        assert trainer.sharded
        seen = []
        linear = trainer.model.dit.blocks[0].ffn[0]
        linear.register_forward_pre_hook(lambda m, args: seen.append(m.weight.dtype))
        master = dict(trainer.model.named_parameters())[PROBE]
        before = master.to_local().clone()
        result = trainer.train()
        # gathered in bf16 for the forward and again for the checkpointed block's recompute in the backward
        assert seen == [torch.bfloat16, torch.bfloat16]
        assert master.dtype == torch.float32 and master.to_local().dtype == torch.float32
        # The step's update is kept: at step 1 only AdamW's weight decay (the zero-initialised head passes no
        # gradient to the blocks yet), 1e-5 of each weight, below bfloat16's resolution: fp32 master weights.
        assert not torch.equal(master.to_local(), before)
        assert trainer.optimizer.state[master]["exp_avg"].dtype == torch.float32
        assert math.isfinite(result.last_losses["loss"])
        assert load_file(tmp_path / "bf16" / DIT_FILE)["blocks.0.ffn.0.weight"].dtype == torch.float32
    finally:
        dist.destroy_process_group()
