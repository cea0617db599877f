"""Recipes: a training chain in one JSON file, each phase naming only what it changes.

A recipe is a JSON object with ``"phases"``, a list run in order. A phase is an object with
- ``name``: unique in the recipe (a trial's or a run's name, usually its output folder's);
- ``stage``: ``vae``, ``stage1``, ``stage2`` or ``stage3`` (a training run, whose resolved config is what a
  ``--config`` JSON file would hold), ``cache`` (the clip cache of the training phase named by ``of``, built from
  that phase's config, usually just before it: ``python -m im_animation_core.train cache``) or ``gate`` (the VAE
  gate on the phase named by ``of``);
- the config of a training phase: ``config`` (the whole config: a base), or ``from`` (an earlier phase of the
  same stage whose resolved config it starts from) with ``unset`` (dotted fields it drops, e.g.
  ``"optim.decay_steps"``) and ``set`` (the fields it changes: objects merge, other values replace), applied in
  that order;
- ``trial`` (optional, true): kept runnable and checked, but not run by the chain;
- any other field is for the chain's runner (e.g. a gate's ``pairs`` and ``output``).

``python -m im_animation_core.train STAGE --recipe FILE --phase NAME`` trains one phase; ``phase_config`` gives
its resolved config as a plain dict, the same as the JSON file it replaces, field for field.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from .config import ConfigError, read_json_file

TRAINING_STAGES = ("vae", "stage1", "stage2", "stage3")
PHASE_KINDS = TRAINING_STAGES + ("cache", "gate")


def is_recipe(data: Any) -> bool:
    return isinstance(data, dict) and "phases" in data


def load_recipe(path: str | Path) -> dict:
    """The recipe at ``path``, checked: unique names, known stages, ``from`` / ``of`` naming earlier phases."""
    path = Path(path)
    data = read_json_file(path, "recipe")
    if not is_recipe(data) or not isinstance(data["phases"], list):
        raise ConfigError(f"recipe file '{path}' must hold an object with a 'phases' list (see "
                          f"im_animation_core/train/recipe.py)")
    seen: dict[str, dict] = {}
    for i, phase in enumerate(data["phases"]):
        name = phase.get("name") if isinstance(phase, dict) else None
        if not isinstance(name, str) or not name:
            raise ConfigError(f"recipe '{path}': phase {i} needs a 'name'")
        if name in seen:
            raise ConfigError(f"recipe '{path}': two phases are named '{name}'; give each its own name")
        stage = phase.get("stage")
        if stage not in PHASE_KINDS:
            raise ConfigError(f"recipe '{path}': phase '{name}' has stage {stage!r}; choose one of "
                              f"{', '.join(PHASE_KINDS)}")
        if stage in TRAINING_STAGES:
            parent = phase.get("from")
            if ("config" in phase) == (parent is not None):
                raise ConfigError(f"recipe '{path}': phase '{name}' needs either 'config' (a whole config) or "
                                  f"'from' (an earlier phase it changes), not both or neither")
            if parent is not None and (parent not in seen or seen[parent]["stage"] != stage):
                raise ConfigError(f"recipe '{path}': phase '{name}' starts from '{parent}', which is not an "
                                  f"earlier {stage} phase")
        seen[name] = phase
    for name, phase in seen.items():  # a cache is built before the phase whose config it is built from
        if phase["stage"] not in TRAINING_STAGES and seen.get(phase.get("of"), {}).get("stage") not in TRAINING_STAGES:
            raise ConfigError(f"recipe '{path}': {phase['stage']} phase '{name}' needs 'of': a training phase of "
                              f"the recipe")
    return data


def phases(recipe: dict) -> dict[str, dict]:
    """{name: phase} in the recipe's order."""
    return {p["name"]: p for p in recipe["phases"]}


def merge(base: dict, changes: dict) -> dict:
    """``base`` with ``changes`` applied: nested objects merge, other values replace (base is not changed)."""
    out = copy.deepcopy(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def drop(data: dict, dotted: str) -> None:
    node = data
    *parents, last = dotted.split(".")
    for part in parents:
        node = node.get(part)
        if not isinstance(node, dict):
            raise ConfigError(f"recipe 'unset' names '{dotted}', which the config does not hold")
    if last not in node:
        raise ConfigError(f"recipe 'unset' names '{dotted}', which the config does not hold")
    del node[last]


def phase_config(recipe: dict, name: str) -> dict:
    """The resolved config dict of training phase ``name`` (what its JSON config file would hold)."""
    table = phases(recipe)
    if name not in table:
        raise ConfigError(f"the recipe has no phase '{name}'; its phases: {', '.join(table)}")
    phase = table[name]
    if phase["stage"] not in TRAINING_STAGES:
        return phase_config(recipe, phase["of"])
    if "config" in phase:
        return copy.deepcopy(phase["config"])
    data = phase_config(recipe, phase["from"])
    for dotted in phase.get("unset", []):
        drop(data, dotted)
    return merge(data, phase.get("set", {}))


def recipe_phase_config(path: str | Path, name: str) -> tuple[str, dict]:
    """(stage, resolved config dict) of phase ``name`` of the recipe at ``path``."""
    recipe = load_recipe(path)
    data = phase_config(recipe, name)
    phase = phases(recipe)[name]
    stage = phase["stage"] if phase["stage"] in TRAINING_STAGES else phases(recipe)[phase["of"]]["stage"]
    return stage, data


def diff(base: dict, new: dict, prefix: str = "") -> tuple[dict, list[str]]:
    """(set, unset) taking ``base`` to ``new`` under ``merge`` and ``drop``: the inverse of ``phase_config``'s
    step, for writing a phase as its changes."""
    changes: dict = {}
    removed: list[str] = []
    for key, value in new.items():
        if key not in base:
            changes[key] = value
        elif isinstance(value, dict) and isinstance(base[key], dict) and value:
            sub, gone = diff(base[key], value, f"{prefix}{key}.")
            if sub:
                changes[key] = sub
            removed += gone
        elif isinstance(value, dict) and isinstance(base[key], dict):  # {} replaces a non-empty object
            if base[key]:
                removed.append(f"{prefix}{key}")
                changes[key] = {}
        elif json.dumps(value) != json.dumps(base[key]):  # 1 and 1.0 differ in a config file
            changes[key] = value
    removed += [f"{prefix}{key}" for key in base if key not in new]
    return changes, removed
