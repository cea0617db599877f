"""optim.warmup_steps / optim.decay_steps: the learning-rate multiplier, and the rates a run really uses."""

import json

import pytest

from im_animation_core.data import SyntheticPairs
from im_animation_core.train import ConfigError, Trainer, config_from_dict
from im_animation_core.train.presets import tiny_config_dict
from im_animation_core.train.schedule import lr_factor

pytestmark = pytest.mark.usefixtures("one_thread")


def test_lr_factor_warms_up_holds_then_decays_to_zero_at_the_last_step():
    assert [lr_factor(k, 0, 0, 10) for k in (0, 5, 9)] == [1.0, 1.0, 1.0]  # the paper's constant rate
    assert [lr_factor(k, 4, 0, 10) for k in range(5)] == [0.25, 0.5, 0.75, 1.0, 1.0]
    assert [lr_factor(k, 0, 4, 10) for k in range(5, 10)] == [1.0, 1.0, 0.75, 0.5, 0.25]
    assert lr_factor(10, 0, 4, 10) == 0.0  # a step past the end never goes negative
    assert lr_factor(0, 2, 10, 10) == 0.5  # overlapping warm-up and decay multiply


def test_a_run_logs_the_scheduled_rates(tmp_path):
    items = [SyntheticPairs("train", 2, frames=5, size=64, seed=3, same_identity=True)[i] for i in range(2)]
    cfg = config_from_dict("stage1", tiny_config_dict("stage1", tmp_path / "run", steps=6, log_every=1,
                                                      optim={"lr": 1e-3, "warmup_steps": 2, "decay_steps": 3}))
    Trainer("stage1", cfg, dataset=items).train()
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    lrs = [next(v for k, v in r.items() if k.startswith("lr_")) for r in rows if "step" in r and "loss" in r]
    # the log of step k (1-based) holds the optimiser's rate after that step's update: the rate of step k + 1,
    # lr * lr_factor(k, ...); the last step ran at a third of lr, and the rate after it is 0
    assert lrs == pytest.approx([1e-3 * lr_factor(k, 2, 3, 6) for k in range(1, 7)])
    assert lrs[-2:] == pytest.approx([1e-3 / 3, 0.0])


def test_negative_decay_steps_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="decay_steps"):
        config_from_dict("stage1", tiny_config_dict("stage1", tmp_path / "x", optim={"decay_steps": -1}))
