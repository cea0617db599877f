"""Recipes (train/recipe.py): every phase of every recipe in configs/ resolves to a valid config and reads only
what earlier phases export (or inputs from outside the chain); bad recipes name the phase and what to fix; the
trainer's --recipe/--phase runs a phase as its config file would."""

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from im_animation_core.train.__main__ import _apply_sets, main
from im_animation_core.train.config import ConfigError, config_from_dict, flatten
from im_animation_core.train.recipe import TRAINING_STAGES, diff, load_recipe, phase_config, recipe_phase_config
from im_animation_core.train.vae_stage import VAEStageConfig

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
RECIPES = sorted(CONFIGS.glob("*.json"))
PHASES = [(path, p["name"]) for path in RECIPES for p in load_recipe(path)["phases"]]
# Files a recipe reads that no phase of it writes: the demo set and released weights under models/, and the
# ablation runner's Stage-2 runs (lab/ablations.py), which the 64-pixel chain's DiT warm-up reads.
OUTSIDE = ("models/", "runs/ablations/")


def test_configs_holds_only_recipes():
    assert len(list(CONFIGS.rglob("*"))) <= 8
    assert RECIPES and all("phases" in json.loads(p.read_text()) for p in RECIPES)


@pytest.mark.parametrize("path, name", PHASES, ids=[f"{p.stem}:{n}" for p, n in PHASES])
def test_every_phase_resolves_to_a_valid_config(path, name):
    stage, data = recipe_phase_config(path, name)
    if stage == "vae":
        VAEStageConfig.from_dict(data)
    else:
        config_from_dict(stage, data)


def _output(data: dict) -> str:
    return data.get("output_dir") or data["output"]


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_every_phase_reads_what_an_earlier_phase_exports(path):
    recipe = load_recipe(path)
    outputs: list[str] = []
    for phase in recipe["phases"]:
        if phase["stage"] not in TRAINING_STAGES:
            continue
        data = phase_config(recipe, phase["name"])
        for key, value in flatten(data).items():
            if not (key.endswith("path") or key in ("init", "teacher")) or not value or value.startswith(OUTSIDE):
                continue
            assert any(value == out or value.startswith(f"{out}/") for out in outputs), (
                f"{path.name} phase {phase['name']}: {key} = {value} is no earlier phase's export")
        assert _output(data) not in outputs, f"{phase['name']} writes over an earlier phase's output"
        outputs.append(_output(data))


def test_a_phase_changes_only_what_it_names():
    recipe = {"phases": [
        {"name": "a", "stage": "stage2", "config": {"seed": 1, "optim": {"lr": 0.1, "eps": 1e-8}, "dit": {"dim": 8}}},
        {"name": "b", "stage": "stage2", "from": "a", "unset": ["optim.eps", "dit"], "set": {"seed": 2, "dit": {}}},
        {"name": "c", "stage": "stage2", "from": "b", "set": {"optim": {"lr": 0.2}}},
    ]}
    assert phase_config(recipe, "b") == {"seed": 2, "optim": {"lr": 0.1}, "dit": {}}
    assert phase_config(recipe, "c") == {"seed": 2, "optim": {"lr": 0.2}, "dit": {}}
    assert phase_config(recipe, "a")["optim"]["eps"] == 1e-8  # resolving b and c changed nothing of a


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_diff_writes_a_phase_back_as_its_changes(path):
    """diff is how a new phase is written from a config: applied to its parent, it gives that config again."""
    recipe = load_recipe(path)
    training = [p for p in recipe["phases"] if p["stage"] in TRAINING_STAGES]
    for before, after in zip(training, training[1:], strict=False):
        if before["stage"] != after["stage"]:
            continue
        old, new = phase_config(recipe, before["name"]), phase_config(recipe, after["name"])
        changes, removed = diff(old, new)
        probe = {"phases": [{"name": "x", "stage": before["stage"], "config": old},
                            {"name": "y", "stage": before["stage"], "from": "x", "unset": removed, "set": changes}]}
        assert json.dumps(phase_config(probe, "y"), sort_keys=True) == json.dumps(new, sort_keys=True)


@pytest.mark.parametrize("phases, message", [
    ([{"name": "a", "stage": "stage2", "config": {}}, {"name": "a", "stage": "stage2", "config": {}}], "two phases"),
    ([{"name": "a", "stage": "stage4", "config": {}}], "stage 'stage4'"),
    ([{"name": "a", "stage": "stage2", "from": "b", "set": {}}], "not an earlier stage2 phase"),
    ([{"name": "a", "stage": "stage1", "config": {}}, {"name": "b", "stage": "stage2", "from": "a"}],
     "not an earlier stage2 phase"),
    ([{"name": "a", "stage": "stage2"}], "either 'config'"),
    ([{"name": "c", "stage": "cache", "of": "nothing"}], "needs 'of'"),
    ([{"stage": "stage2", "config": {}}], "needs a 'name'"),
])
def test_a_bad_recipe_names_the_phase_and_the_fix(tmp_path, phases, message):
    path = tmp_path / "recipe.json"
    path.write_text(json.dumps({"phases": phases}))
    with pytest.raises(ConfigError, match=message):
        load_recipe(path)


def test_unset_of_a_field_the_config_lacks_is_an_error():
    recipe = {"phases": [{"name": "a", "stage": "stage2", "config": {"seed": 1}},
                         {"name": "b", "stage": "stage2", "from": "a", "unset": ["optim.lr"]}]}
    with pytest.raises(ConfigError, match="optim.lr"):
        phase_config(recipe, "b")
    with pytest.raises(ConfigError, match="no phase 'z'"):
        phase_config(recipe, "z")


def test_the_trainer_runs_a_recipe_phase_and_refuses_a_mismatch(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("im_animation_core.train.__main__.run",
                        lambda stage, config, resume: pytest.fail(f"should not train: {stage}"))
    recipe = CONFIGS / "paper.json"
    assert main(["stage1", "--recipe", str(recipe), "--phase", "stage2"]) == 2
    assert "is a stage2 phase" in capsys.readouterr().err
    assert main(["stage2", "--config", str(recipe)]) == 2
    assert "is a recipe" in capsys.readouterr().err
    assert main(["stage2", "--recipe", str(recipe)]) == 2
    assert "--recipe and --phase go together" in capsys.readouterr().err
    ran = []
    monkeypatch.setattr("im_animation_core.train.__main__.run", lambda stage, config, resume: ran.append(config)
                        or SimpleNamespace(step=0, output_dir="runs/x", files=[]))
    assert main(["stage2", "--recipe", str(recipe), "--phase", "stage2", "--set", "seed=7"]) == 0
    want = config_from_dict("stage2", _apply_sets(phase_config(load_recipe(recipe), "stage2"), ["seed=7"]))
    assert ran == [want] and want.seed == 7
