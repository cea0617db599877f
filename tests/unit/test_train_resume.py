"""Resumable training: a resumed run ends bit-identical to an uninterrupted one; a checkpoint of another
configuration or stage is refused naming what differs; a non-finite loss stops the run naming the step and the
batch's samples."""

import json
import re

import pytest
import torch
from safetensors.torch import load_file

from im_animation_core.data import SyntheticPairs
from im_animation_core.train import Trainer, TrainingError, config_from_dict
from im_animation_core.train.presets import tiny_config_dict, tiny_vae
from im_animation_core.train.trainer import resolve_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def items():
    return [SyntheticPairs("train", 4, frames=5, size=64, seed=2)[i] for i in range(4)]


def stage3(out, steps, **over):
    # Augmentation on, 4 samples in batches of 2: data order, augmentation, sigma and noise all vary by step.
    return config_from_dict("stage3", tiny_config_dict("stage3", out, steps=steps, save_every=2,
                                                       data={"augment": True}, **over))


def weights(trainer):
    return {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}


def test_resume_continues_exactly_like_an_uninterrupted_run(tmp_path, items):
    vae = tiny_vae()
    full = Trainer("stage3", stage3(tmp_path / "full", 6), dataset=items, vae=vae)
    full.train()
    first = Trainer("stage3", stage3(tmp_path / "part", 2), dataset=items, vae=vae)
    first.train()
    assert resolve_checkpoint(tmp_path / "part").name == "step_00000002"
    resumed = Trainer("stage3", stage3(tmp_path / "part", 6), dataset=items, vae=vae)
    result = resumed.train(resume=tmp_path / "part")
    assert result.step == 6
    a, b = weights(full), weights(resumed)
    assert a.keys() == b.keys()
    changed = [k for k in a if not torch.equal(a[k], b[k])]
    assert not changed, changed[:5]
    assert not torch.equal(a["dit.head.head.weight"], weights(first)["dit.head.head.weight"])  # it did train on
    # The exported files agree too, and the log has one line per logged step.
    for name in ("wan_dit.safetensors", "im_animation_modules.safetensors"):
        fa, fb = load_file(tmp_path / "full" / name), load_file(tmp_path / "part" / name)
        assert all(torch.equal(fa[k], fb[k]) for k in fa)
    steps = [json.loads(x)["step"] for x in (tmp_path / "part" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [2, 4, 6]
    kept = sorted(p.name for p in (tmp_path / "part" / "checkpoints").glob("step_*"))
    assert kept == ["step_00000004", "step_00000006"]  # keep_checkpoints = 2
    state = torch.load(tmp_path / "part" / "checkpoints" / "step_00000006" / "state.pt", weights_only=True)
    assert state["step"] == 6 and state["optimizer"]["param_groups"][1]["name"] == "dit"


def test_resume_with_another_config_or_stage_is_refused(tmp_path, items):
    vae = tiny_vae()
    Trainer("stage3", stage3(tmp_path / "run", 2), dataset=items, vae=vae).train()
    other = stage3(tmp_path / "run", 4, dit_lr=5e-4, retarget_weight=1.0)
    with pytest.raises(TrainingError) as err:
        Trainer("stage3", other, dataset=items, vae=vae).train(resume=tmp_path / "run")
    msg = str(err.value)
    assert "dit_lr (checkpoint 0.001, now 0.0005)" in msg and "retarget_weight (checkpoint 10.0, now 1.0)" in msg
    assert "steps" not in msg.split("Differing field(s):")[1].split(".")[0]  # a longer run is allowed
    s2 = config_from_dict("stage2", tiny_config_dict("stage2", tmp_path / "run", steps=4))
    with pytest.raises(TrainingError, match="checkpoint of stage3, not of stage2"):
        Trainer("stage2", s2, dataset=items, vae=vae).train(resume=tmp_path / "run")
    with pytest.raises(TrainingError, match="no checkpoint to resume from"):
        Trainer("stage3", stage3(tmp_path / "new", 2), dataset=items, vae=vae).train(resume=tmp_path / "new")


def test_non_finite_loss_stops_naming_the_step_and_samples(tmp_path, items):
    bad = [dict(x) for x in items]
    bad[3]["driving_joints"] = torch.full_like(bad[3]["driving_joints"], float("nan"))
    cfg = config_from_dict("stage1", tiny_config_dict("stage1", tmp_path / "nan", steps=4, save_every=100))
    with pytest.raises(TrainingError) as err:
        Trainer("stage1", cfg, dataset=bad).train()
    pattern = r"the loss is nan at step (\d+), on the batch of dataset sample\(s\) \[(\d+), (\d+)\]"
    m = re.search(pattern, str(err.value))
    assert m, str(err.value)
    assert 3 in (int(m.group(2)), int(m.group(3)))
    assert 1 <= int(m.group(1)) <= 2  # the first epoch (2 steps) contains sample 3
    assert not (tmp_path / "nan" / "motion_tokenizer.safetensors").exists()


def test_a_checkpoint_from_before_a_config_field_existed_resumes_with_its_default(tmp_path, items):
    vae = tiny_vae()
    Trainer("stage3", stage3(tmp_path / "run", 2), dataset=items, vae=vae).train()
    saved = resolve_checkpoint(tmp_path / "run") / "config.json"
    old = json.loads(saved.read_text())
    del old["moving_weight"]  # written before the field existed
    saved.write_text(json.dumps(old))
    assert Trainer("stage3", stage3(tmp_path / "run", 3), dataset=items, vae=vae).train(
        resume=tmp_path / "run").step == 3
    # The field's default is what such a checkpoint means: another value is still refused.
    with pytest.raises(TrainingError, match=re.escape("moving_weight (checkpoint 0.0, now 5.0)")):
        Trainer("stage3", stage3(tmp_path / "run", 4, moving_weight=5.0), dataset=items, vae=vae).train(
            resume=tmp_path / "run")
