"""python -m im_animation_core.train vae|stage1|stage2|stage3 --config cfg.json [--resume DIR] [--set KEY=VALUE ...]

Every command takes, instead of --config, a phase of a recipe (train.recipe): --recipe configs/demo128.json
--phase stage3_dit (a cache or gate phase stands for the config of the phase it names).

python -m im_animation_core.train cache --config stage3.json [--for stage2|stage3] [--set ...]: build the clip
cache (train.cache) that the config's data.cache names, for that stage's config (default stage3).

python -m im_animation_core.train plan --config stage3.json --gpus N [--gpu-memory 80] [--json]: per-rank
memory (parameters, gradients, AdamW state, activations with and without per-block checkpointing) and time of
a Stage-3 run sharded over N GPUs, from the models built on the meta device (train.plan).

Multi-GPU: torchrun --nproc_per_node N -m im_animation_core.train stage3 --config cfg.json
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import sys

from ..errors import IMAnimationError
from .config import STAGES, ConfigError, config_from_dict
from .recipe import is_recipe, recipe_phase_config
from .trainer import run


def _apply_sets(data: dict, sets: list[str]) -> dict:
    for item in sets:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set needs KEY=VALUE (e.g. optim.lr=0.001), got '{item}'")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw  # a bare string, e.g. output_dir=runs/x
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {key}: '{part}' is not an object in the config")
        node[parts[-1]] = value
    return data


def _config_data(args) -> dict:
    """The config dict that --config names, or phase --phase of --recipe, with --set applied."""
    if args.recipe or args.phase:
        if not (args.recipe and args.phase):
            raise ConfigError("--recipe and --phase go together: the recipe file and the name of its phase")
        if args.config:
            raise ConfigError("give either --config FILE or --recipe FILE --phase NAME, not both")
        stage, data = recipe_phase_config(args.recipe, args.phase)
        if stage != args.stage and args.stage not in ("cache", "plan"):
            raise ConfigError(f"phase '{args.phase}' of '{args.recipe}' is a {stage} phase, but '{args.stage}' "
                              f"was asked for")
        return _apply_sets(data, args.set)
    if not args.config:
        raise ConfigError("name a config: --config FILE, or --recipe FILE --phase NAME")
    try:
        with open(args.config, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise ConfigError(f"config file '{args.config}' is not valid JSON: {e}") from e
    if is_recipe(data):
        raise ConfigError(f"'{args.config}' is a recipe: name its phase, --recipe {args.config} --phase NAME")
    if not isinstance(data, dict):
        raise ConfigError(f"config file '{args.config}' must hold a JSON object")
    return _apply_sets(data, args.set)


def _config_label(args) -> str:
    """How the messages name the config (to rerun a command with it)."""
    return f"{args.recipe} --phase {args.phase}" if args.recipe else args.config


def _run_vae(args) -> int:
    from .vae_stage import VAEStageConfig, run_vae

    if args.resume:
        raise ConfigError("the VAE trainer continues from weights through the config field 'init', not --resume")
    print(json.dumps({"stage": "vae", **run_vae(VAEStageConfig.from_dict(_config_data(args)))}))
    return 0


def _run_cache(args) -> int:
    from .cache import build_cache

    if args.resume:
        raise ConfigError("the cache command resumes by itself (rerun it); --resume is for the stages")
    data = _config_data(args)
    stage = args.for_stage
    index = build_cache(stage, config_from_dict(stage, data), _config_label(args), log_fn=print)
    print(json.dumps({"stage": "cache", "for": stage, "folder": data["data"]["cache"], "clips": index["clips"],
                      "skipped": len(index.get("source", {}).get("skipped", {}))}))
    return 0


def _run_plan(args) -> int:
    from .plan import PlanOptions, format_plan, memory_plan, plan_json

    if args.resume:
        raise ConfigError("the plan command reads a config only; --resume is for the stages")
    if args.gpus is None:
        raise ConfigError("plan needs --gpus N: the number of GPUs the run is sharded over (e.g. --gpus 16)")
    data = _config_data(args)
    options = PlanOptions(gpus=args.gpus, gpu_memory_gib=args.gpu_memory, frames=args.frames, height=args.height,
                          width=args.width, reserve=args.reserve, peak_tflops=args.peak_tflops,
                          utilization=args.utilization)
    plan = memory_plan(config_from_dict("stage3", data), options)
    print(plan_json(plan) if args.json else format_plan(plan, _config_label(args)))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m im_animation_core.train",
                                     description="Train one IM-Animation stage (paper section 3.4).")
    parser.add_argument("stage", choices=("vae", "cache", "plan") + STAGES)
    parser.add_argument("--config", help="JSON config (fields in im_animation_core/train/config.py)")
    parser.add_argument("--recipe", help="a recipe file (configs/*.json with phases), instead of --config")
    parser.add_argument("--phase", help="with --recipe: the phase to run (python -m lab.train_demo --list)")
    parser.add_argument("--resume", default=None, help="a run's output directory or one of its checkpoints")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config field, e.g. --set seed=1 --set optim.lr=1e-3 (repeatable)")
    parser.add_argument("--for", dest="for_stage", choices=("stage2", "stage3"), default="stage3",
                        help="cache: the stage whose config --config is (default stage3)")
    plan = parser.add_argument_group("plan (a Stage-3 config)")
    plan.add_argument("--gpus", type=int, default=None, help="GPUs the run is sharded over")
    plan.add_argument("--gpu-memory", type=float, default=80.0, help="memory of one GPU in GiB (default 80)")
    plan.add_argument("--frames", type=int, default=81, help="clip frames, 4k+1 (default 81, the paper's)")
    plan.add_argument("--height", type=int, default=704, help="frame height in pixels (default 704)")
    plan.add_argument("--width", type=int, default=1280, help="frame width in pixels (default 1280)")
    plan.add_argument("--reserve", type=float, default=0.10,
                      help="share of GPU memory kept for the CUDA context, communication and fragmentation")
    plan.add_argument("--peak-tflops", type=float, default=989.0,
                      help="peak dense bf16 TFLOPS of one GPU for the time estimate (default 989, H100 SXM)")
    plan.add_argument("--utilization", type=float, default=0.35,
                      help="assumed share of the peak reached (default 0.35)")
    plan.add_argument("--json", action="store_true", help="print the plan as JSON")
    args = parser.parse_args(argv)
    rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if args.stage == "vae":
            return _run_vae(args)
        if args.stage == "cache":
            return _run_cache(args)
        if args.stage == "plan":
            return _run_plan(args)
        config = config_from_dict(args.stage, _config_data(args))
        result = run(args.stage, config, resume=args.resume)
    except (IMAnimationError, OSError, json.JSONDecodeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        # the trainer's modules hold the process group in reference cycles: freed here, while the interpreter
        # is whole, rather than in its teardown, where gloo's threads can abort a finished run
        gc.collect()
    if rank == 0:
        print(json.dumps({"stage": args.stage, "step": result.step, "output_dir": str(result.output_dir),
                          "files": result.files}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
