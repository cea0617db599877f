"""The trainer's speed options at tiny size: mixed_precision "bf16" on a CPU, compile, optim.implementation.
They parse and validate like every field; a CPU without bfloat16 units and a machine where torch.compile fails
train in float32 / eager with one log line naming why; the bf16 step stays close to the float32 one and keeps
float32 weights, optimiser state and loss."""

import logging

import pytest
import torch

from im_animation_core.data import SyntheticPairs, collate_pairs
from im_animation_core.train import ConfigError, Trainer, config_from_dict
from im_animation_core.train.config import config_to_dict, diff_configs
from im_animation_core.train.presets import tiny_config_dict, tiny_vae
from im_animation_core.train.trainer import cpu_bf16_problem

pytestmark = pytest.mark.usefixtures("one_thread")
LOGGER = "im_animation_core.train.trainer"


@pytest.fixture(scope="module")
def items():
    return [SyntheticPairs("train", 2, frames=5, size=64, seed=3)[i] for i in range(2)]


def stage3(tmp_path, name, **overrides):
    return config_from_dict("stage3", tiny_config_dict("stage3", tmp_path / name, **overrides))


def batch_of(items):
    batch = collate_pairs(items)
    batch["index"] = torch.arange(len(items))
    return batch


def test_speed_options_default_off_and_parse(tmp_path):
    c = stage3(tmp_path, "a")
    assert (c.mixed_precision, c.compile, c.optim.implementation) == ("no", False, "default")
    c = stage3(tmp_path, "b", mixed_precision="bf16", compile=True, optim={"implementation": "fused"})
    assert (c.mixed_precision, c.compile, c.optim.implementation) == ("bf16", True, "fused")
    assert config_to_dict(c)["optim"]["implementation"] == "fused"


@pytest.mark.parametrize("overrides, match", [
    ({"optim": {"implementation": "fast"}}, r"'optim.implementation' is 'fast'; choose one of default, foreach, fused"),
    ({"compile": "yes"}, r"'compile' must be true or false"),
    ({"mixed_precision": "fp16"}, r"'mixed_precision' is 'fp16'; choose one of no, bf16"),
])
def test_bad_speed_options_name_the_field(tmp_path, overrides, match):
    with pytest.raises(ConfigError, match=match):
        stage3(tmp_path, "bad", **overrides)


def test_compile_and_kernels_may_change_on_resume_but_precision_may_not(tmp_path):
    old = config_to_dict(stage3(tmp_path, "a"))
    new = config_to_dict(stage3(tmp_path, "a", compile=True, optim={"implementation": "fused"}))
    assert diff_configs(old, new) == []
    bf16 = config_to_dict(stage3(tmp_path, "a", mixed_precision="bf16"))
    assert diff_configs(old, bf16) == ['mixed_precision (checkpoint "no", now "bf16")']


def _dit_output_dtypes(trainer):
    seen = []
    trainer.model.dit.register_forward_hook(lambda m, i, out: seen.append(out.dtype))
    return seen


def test_cpu_without_bf16_units_trains_float32_with_one_log_line(tmp_path, items, monkeypatch, caplog):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert "no bfloat16 matrix units" in cpu_bf16_problem()
    with caplog.at_level(logging.INFO, logger=LOGGER):
        trainer = Trainer("stage3", stage3(tmp_path, "s", mixed_precision="bf16", device="cpu"), dataset=items,
                          vae=tiny_vae())
    lines = [r for r in caplog.records if r.name == LOGGER]
    assert len(lines) == 1 and lines[0].levelno == logging.WARNING
    assert "mixed_precision 'bf16'" in lines[0].getMessage() and "training in float32" in lines[0].getMessage()
    assert "no bfloat16 matrix units" in lines[0].getMessage()
    assert trainer.autocast_dtype is None
    seen = _dit_output_dtypes(trainer)
    params = [p for g in trainer.optimizer.param_groups for p in g["params"]]
    losses, _ = trainer.train_step(batch_of(items), 1, params)
    assert seen == [torch.float32] and torch.isfinite(losses["loss"])


@pytest.mark.skipif(cpu_bf16_problem() is not None, reason="this CPU has no bfloat16 units: trainer falls back")
def test_bf16_step_is_close_to_float32_and_keeps_float32_state(tmp_path, items):
    runs = {}
    for precision in ("no", "bf16"):
        trainer = Trainer("stage3", stage3(tmp_path, precision, mixed_precision=precision, device="cpu",
                                           optim={"implementation": "fused"}), dataset=items, vae=tiny_vae())
        seen = _dit_output_dtypes(trainer)
        params = [p for g in trainer.optimizer.param_groups for p in g["params"]]
        steps = [trainer.train_step(batch_of(items), k, params)[0] for k in (1, 2, 3)]
        runs[precision] = (trainer, seen, steps)
    (_, seen32, steps32), (t16, seen16, steps16) = runs["no"], runs["bf16"]
    assert t16.autocast_dtype is torch.bfloat16 and set(seen16) == {torch.bfloat16} and set(seen32) == {torch.float32}
    for a, b in zip(steps32, steps16, strict=True):
        assert b["loss"].dtype == torch.float32 and torch.isfinite(b["loss"])
        for key in ("loss", "dit", "retarget"):
            x, y = float(a[key].detach()), float(b[key].detach())
            assert abs(y - x) <= 0.05 * abs(x) + 1e-4, (key, x, y)
    assert all(p.dtype == torch.float32 for p in t16.model.parameters())
    state = list(t16.optimizer.state.values())
    assert state and all(s["exp_avg"].dtype == torch.float32 for s in state)


def test_fused_and_foreach_adamw_match_the_default_update(tmp_path, items):
    updates = {}
    for impl in ("default", "foreach", "fused"):
        trainer = Trainer("stage3", stage3(tmp_path, impl, device="cpu", optim={"implementation": impl}),
                          dataset=items, vae=tiny_vae())
        params = [p for g in trainer.optimizer.param_groups for p in g["params"]]
        start = [p.detach().clone() for p in params]
        for k in (1, 2):
            trainer.train_step(batch_of(items), k, params)
        updates[impl] = [p.detach() - p0 for p, p0 in zip(params, start, strict=True)]
        d = trainer.optimizer.defaults
        assert (bool(d["foreach"]), bool(d["fused"])) == (impl == "foreach", impl == "fused")
    # Adam's first steps move every weight by about lr whatever its gradient's size, so where a gradient is
    # near zero float rounding flips a few signs: the updates agree as wholes, not element by element
    for impl in ("foreach", "fused"):
        for a, b in zip(updates["default"], updates[impl], strict=True):
            assert float((b - a).norm()) <= 0.02 * float(a.norm()) + 1e-7


def test_compile_failure_trains_eager_with_one_log_line(tmp_path, items, monkeypatch, caplog):
    """A toolchain that cannot compile (simulated: the compiled forward raises as inductor does without a C++
    compiler) costs one log line; the step is the eager step."""
    def broken_compile(fn, *args, **kwargs):
        def compiled(*a, **k):
            raise RuntimeError("InductorError: CppCompileError: C++ compile error\nno compiler found")
        return compiled

    monkeypatch.setattr(torch, "compile", broken_compile)
    eager = Trainer("stage3", stage3(tmp_path, "eager", device="cpu"), dataset=items, vae=tiny_vae())
    trainer = Trainer("stage3", stage3(tmp_path, "c", device="cpu", compile=True), dataset=items, vae=tiny_vae())
    assert trainer.compiled == trainer.stage.compile_targets() and len(trainer.compiled) == 2
    params = [p for g in trainer.optimizer.param_groups for p in g["params"]]
    eager_params = [p for g in eager.optimizer.param_groups for p in g["params"]]
    with caplog.at_level(logging.INFO, logger=LOGGER):
        losses = [trainer.train_step(batch_of(items), k, params)[0]["loss"] for k in (1, 2)]
    want = [eager.train_step(batch_of(items), k, eager_params)[0]["loss"] for k in (1, 2)]
    lines = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert len(lines) == 1 and "torch.compile failed" in lines[0] and "no compiler" not in lines[0]
    assert "RuntimeError: InductorError: CppCompileError" in lines[0] and "training eager" in lines[0]
    assert trainer.compiled == [] and "forward" not in vars(trainer.model.dit)
    for a, b in zip(losses, want, strict=True):
        torch.testing.assert_close(a, b)


def test_project_errors_under_compile_are_not_taken_for_compile_failures(tmp_path, items, monkeypatch):
    from im_animation_core.train.trainer import TrainingError

    monkeypatch.setattr(torch, "compile", lambda fn, *a, **k: fn)
    trainer = Trainer("stage3", stage3(tmp_path, "c", device="cpu", compile=True), dataset=items, vae=tiny_vae())
    params = [p for g in trainer.optimizer.param_groups for p in g["params"]]
    batch = batch_of(items)
    batch["identity"] = batch["identity"] * float("nan")
    with pytest.raises(TrainingError, match="the loss is nan"):
        trainer.train_step(batch, 1, params)
    assert len(trainer.compiled) == 2  # still compiled: a non-finite loss says nothing about the compiler
