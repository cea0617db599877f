"""Multi-process training: torchrun launches two CPU processes (gloo backend) that train Stage 3 with
DistributedDataParallel on disjoint halves of each global batch. Their parameters stay identical, and the run
computes what one process with the whole global batch computes (per-sample random draws, same data)."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from im_animation_core.train import Trainer, config_from_dict
from im_animation_core.train.presets import tiny_config_dict, write_tiny_vae
from tools.torchrun import run_two_ranks

WORKER = """
import json, sys
import torch
from safetensors.torch import save_file
from im_animation_core.train import Trainer, config_from_dict


def main():
    stage, cfg_path, out = sys.argv[1:4]
    cfg = config_from_dict(stage, json.load(open(cfg_path)))
    trainer = Trainer(stage, cfg)
    seen = [b["index"].tolist() for b in trainer._loader(0, cfg.steps)]
    trainer.train()
    sd = {k: v.detach().clone().contiguous() for k, v in trainer.model.state_dict().items()}
    save_file(sd, f"{out}/rank{trainer.info.rank}.safetensors")
    with open(f"{out}/rank{trainer.info.rank}.json", "w") as f:
        json.dump({"world": trainer.info.world_size, "seen": seen}, f)
    trainer.close()

"""


pytestmark = pytest.mark.usefixtures("one_thread")


def losses(path):
    return [json.loads(line)["loss"] for line in Path(path).read_text().splitlines()]


def test_two_gloo_processes_stay_in_sync_and_match_one_process(tmp_path):
    vae = write_tiny_vae(tmp_path / "vae.safetensors")
    common = dict(vae_path=vae, steps=3, log_every=1, save_every=100, cpu_threads=1, data={"num_samples": 8})
    ddp_cfg = tiny_config_dict("stage3", tmp_path / "ddp", batch_size=2, **common)
    (tmp_path / "cfg.json").write_text(json.dumps(ddp_cfg))
    done = run_two_ranks(WORKER, tmp_path, ["stage3", str(tmp_path / "cfg.json"), str(tmp_path)])
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]

    info = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [i["world"] for i in info] == [2, 2]
    for a, b in zip(info[0]["seen"], info[1]["seen"], strict=True):
        assert not set(a) & set(b)  # each process trains on its own half of the global batch
    w0, w1 = load_file(tmp_path / "rank0.safetensors"), load_file(tmp_path / "rank1.safetensors")
    assert w0.keys() == w1.keys()
    differing = [k for k in w0 if not torch.equal(w0[k], w1[k])]
    assert not differing, differing[:5]

    # One process with the global batch of 4 sees the same samples with the same draws: the same losses.
    single = config_from_dict("stage3", tiny_config_dict("stage3", tmp_path / "single", batch_size=4, **common))
    from im_animation_core.train.presets import tiny_vae

    Trainer("stage3", single, vae=tiny_vae()).train()
    ddp_losses, one_losses = losses(tmp_path / "ddp" / "metrics.jsonl"), losses(tmp_path / "single" / "metrics.jsonl")
    torch.testing.assert_close(ddp_losses[0], one_losses[0], rtol=1e-5, atol=0)
    torch.testing.assert_close(ddp_losses, one_losses, rtol=2e-3, atol=0)
    ws = load_file(tmp_path / "single" / "im_animation_modules.safetensors")
    wd = load_file(tmp_path / "ddp" / "im_animation_modules.safetensors")
    torch.testing.assert_close(wd["retarget.out.weight"], ws["retarget.out.weight"], rtol=0, atol=5e-4)
