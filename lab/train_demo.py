"""make train-demo: the 128-pixel demo model set, trained from scratch in order with the seeds of its recipe.

The chain is the recipe configs/demo128.json (im_animation_core/train/recipe.py): its phases in order, each
naming what it changes from an earlier one. Every step is one command of at most 90 minutes on the 2-core CPU
machine (docs/training.md gives each one's time); a step whose output exists is skipped, so rerunning the script
continues the chain. The VAE gate (lab/vae_gate.py) runs before any DiT training and stops the chain when
the VAE loses the motion (--force goes on anyway). The recipe's trials are listed, and run only when --only
names them.

    python -m lab.train_demo [--list] [--only NAME[,NAME]] [--device cpu|cuda] [--force]
    python -m lab.train_demo --save      # copy the finished steps' outputs into lab/runs/demo128/ (for git)
    python -m lab.train_demo --restore   # copy them back into runs/demo128/: those steps count as done

A chain longer than one machine's life continues from the committed outputs: --save after a step improves
the figures, commit lab/runs/demo128/, and on a fresh clone --restore before continuing. Weights that
lab/package_demo.py has made the demo set's (the dim-16 VAE in models/vae/; the latest DiT phase's DiT,
modules and tokenizer) are committed once: --save leaves them out of lab/runs/demo128/ and records their SHA-256
in lab/runs/demo128/packaged.json, and --restore takes them from the demo set when they match. So is any other
step output with the bytes of a demo-set file (the frozen tokenizer that Stage 1 wrote and Stage 2 passes on).
"""

from __future__ import annotations

import argparse
import filecmp
import json
import shutil
import subprocess
import sys
from pathlib import Path

from im_animation_core.train.cache import file_sha256
from im_animation_core.train.outputs import outputs_path
from im_animation_core.train.recipe import load_recipe, phase_config, phases
from lab import DEMO_RECORDS
from tools.demo_set import SOURCES

REPO = Path(__file__).resolve().parents[1]

RECIPE = "configs/demo128.json"
TRAIN = [sys.executable, "-m", "im_animation_core.train"]
_RECIPE = load_recipe(REPO / RECIPE)
PHASES = phases(_RECIPE)  # {name: the recipe's phase}, in chain order


def phase_data(name: str) -> dict:
    """The resolved config of a training phase (what its own JSON config file would hold)."""
    return phase_config(_RECIPE, name)


def _chain(stage: str) -> tuple[str, ...]:
    return tuple(n for n, p in PHASES.items() if p["stage"] == stage and not p.get("trial"))


def phase_command(stage: str, name: str) -> list[str]:
    return TRAIN + [stage, "--recipe", RECIPE, "--phase", name]


# The retargeter's Stage-2 runs, each a continuation of the one before it (docs/training.md says why each).
STAGE2_CHAIN = _chain("stage2")
LATEST_STAGE2 = STAGE2_CHAIN[-1]  # the retargeter the DiT-first phase reads
# The DiT-first phase and its continuations, then the joint phase (the retargeter trained too), each starting
# from the weights the one before it exported. The first clip cache serves the phases up to stage3_joint7: the
# DiT-first phases read its motion maps (it is keyed by their frozen retargeter's tensors), the joint phases only
# its other fields; later phases read caches of clips from other generator seeds (CACHES).
# The phases whose config says device "cuda" train on live clips (no cache) on a GPU: scripts/gpu_train.sh; the
# CPU phases after them read cached clips again.
STAGE3_CHAIN = _chain("stage3")
LATEST_STAGE3 = STAGE3_CHAIN[-1]  # the demo set's DiT, modules and tokenizer (lab/package_demo.py)
VAE_CHAIN = _chain("vae")
TRIALS = tuple(n for n, p in PHASES.items() if p.get("trial"))
CHAINS = (STAGE2_CHAIN, STAGE3_CHAIN)
_STAGE3_CONFIGS = {name: phase_data(name) for name in STAGE3_CHAIN}
GPU_PHASES = tuple(name for name, c in _STAGE3_CONFIGS.items() if c.get("device") == "cuda")
# Each cache folder is built once, by its cache phase (just before the first phase that reads it), for the phase
# reading it that reads the most clips: a config reading fewer reads its first clips (generated clips do not
# depend on how many there are), so the earlier phases see what they saw when they ran. A later phase may read a
# folder of its own, built from another generator seed: clips the DiT has not seen.
CACHE_READERS: dict[str, list[str]] = {}  # {cache folder: the phases reading it, in chain order}
for _name, _config in _STAGE3_CONFIGS.items():
    if _config["data"].get("cache"):
        CACHE_READERS.setdefault(_config["data"]["cache"], []).append(_name)
CACHE_STEPS = {n: phase_data(p["of"])["data"]["cache"] for n, p in PHASES.items() if p["stage"] == "cache"}
# {cache folder: (the phase whose config builds it, the clips it holds)}
CACHES = {folder: (PHASES[step]["of"], max(_STAGE3_CONFIGS[n]["data"]["num_samples"] for n in CACHE_READERS[folder]))
          for step, folder in CACHE_STEPS.items()}
FIRST_CACHE = next(iter(CACHES))


def cache_step(folder: str) -> str:
    """The chain's step (the recipe's cache phase) that builds this cache folder."""
    return next(step for step, f in CACHE_STEPS.items() if f == folder)


def cache_command(folder: str) -> list[str]:
    phase, clips = CACHES[folder]
    return TRAIN + ["cache", "--recipe", RECIPE, "--phase", phase, "--set", f"data.num_samples={clips}"]


def _step(name: str) -> tuple[str, list[str], str]:
    """(name, command, the file whose presence means the step is done) of a phase of the recipe."""
    phase = PHASES[name]
    if phase["stage"] == "cache":
        return name, cache_command(CACHE_STEPS[name]), f"{CACHE_STEPS[name]}/index.json"
    if phase["stage"] == "gate":
        return name, [sys.executable, "-m", "lab.vae_gate", "--recipe", RECIPE, "--phase", phase["of"], "--pairs",
                      str(phase["pairs"]), "--json", phase["output"]], phase["output"]
    if phase["stage"] == "vae":
        return name, phase_command("vae", name), phase_data(name)["output"]
    return name, phase_command(phase["stage"], name), outputs_path(phase_data(name)["output_dir"])


STEPS = tuple(_step(n) for n, p in PHASES.items() if not p.get("trial"))
TRIAL_STEPS = tuple(_step(n) for n in TRIALS)
GATE = next(p for p in PHASES.values() if p["stage"] == "gate")
GATE_FILE = GATE["output"]
# the config field that picks the device, per step (the VAE trainer's sits under train)
DEVICE_FIELD = {n: "train.device" if p["stage"] == "vae" else "device" for n, p in PHASES.items()
                if p["stage"] != "gate"}


def done(name: str, marker: str | Path) -> bool:
    for chain in CHAINS:  # a continuation's output stands for the runs it continued (only it is kept)
        if name in chain:
            later = chain[chain.index(name):]
            return any((REPO / outputs_path(phase_data(n)["output_dir"])).is_file() for n in later)
    last_reader = CACHE_READERS[CACHE_STEPS[name]][-1] if name in CACHE_STEPS else None
    if last_reader and done(last_reader, outputs_path(phase_data(last_reader)["output_dir"])):
        return True  # no phase left to read it (the weights came from the demo set: --restore)
    path = REPO / marker
    if not path.is_file():
        return False
    if name in CACHE_STEPS:  # a cache built for fewer clips is grown (only the new clips are built)
        index = json.loads(path.read_text())
        return bool(index.get("complete")) and index.get("clips", 0) >= CACHES[CACHE_STEPS[name]][1]
    if name in VAE_CHAIN:  # rewritten every save_every steps: done when it holds the last step
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            trained = json.loads((f.metadata() or {}).get("im_animation_vae_train", "{}")).get("steps")
        return trained == phase_data(name)["steps"]
    return True


COMMITTED = DEMO_RECORDS
# {the demo set's file (demo.SOURCES key): the DiT phase's output it is copied from}
STAGE3_FILES = {"dit": "wan_dit.safetensors", "modules": "im_animation_modules.safetensors",
                "tokenizer": "motion_tokenizer.safetensors"}
STAGE3_WEIGHTS = tuple(STAGE3_FILES.values())
# What each step leaves that a later step or a continuation reads (the cache is rebuilt: it is large and
# deterministic).
# The dim-16 VAE: the one the gate scores, which the DiT phases read.
VAE_OUTPUT = phase_data(GATE["of"])["output"]
KEEP = {
    # every VAE's weights, and the training log of the one the DiT reads
    **{name: [phase_data(name)["output"]] + ([str(Path(VAE_OUTPUT).parent / "metrics.jsonl")]
                                             if phase_data(name)["output"] == VAE_OUTPUT else [])
       for name in VAE_CHAIN},
    GATE["name"]: [GATE_FILE],
    "stage1": [f"runs/demo128/stage1/{f}" for f in ("motion_tokenizer.safetensors", "config.yaml",
                                                    "heatmap_head.safetensors", "config.json", "outputs.json")],
    # the record of every Stage-2 run, and the weights of the latest only (the chain continues from it)
    **{name: [f"runs/demo128/{name}/{f}" for f in ("config.yaml", "config.json", "outputs.json", "metrics.jsonl")]
       + ([f"runs/demo128/{name}/{f}" for f in ("im_animation_modules.safetensors", "motion_tokenizer.safetensors")]
          if name == LATEST_STAGE2 else [])
       for name in STAGE2_CHAIN},
    # the same for the DiT phases; the latest's weights are the demo set's files (PACKAGED)
    **{name: [f"runs/demo128/{name}/{f}" for f in ("config.yaml", "config.json", "outputs.json", "metrics.jsonl")]
       + ([f"runs/demo128/{name}/{f}" for f in STAGE3_WEIGHTS] if name == LATEST_STAGE3 else [])
       for name in STAGE3_CHAIN},
}


# Step outputs that the demo model set may hold already, as lab/package_demo.py copies them into models/:
# {the step's output: the demo set's file (demo.SOURCES, where make demo looks)}, for the chain's last DiT phase.
# Committed once, in the demo set; --save records the SHA-256 of each such output in PACKAGED_RECORD, and
# --restore copies a demo-set file back only when it matches.
DEMO_SET_KEY = {f: key for key, f in STAGE3_FILES.items()}  # a DiT phase's output file -> its demo.SOURCES key
DEMO_SET = {key: SOURCES[key].relative_to(REPO).as_posix() for key in ("vae", *STAGE3_FILES)}
PACKAGED_RECORD = (DEMO_RECORDS / "packaged.json").relative_to(REPO).as_posix()


def demo_set_file(run_path: str) -> Path | None:
    """The demo set's file that may hold this step output: the dim-16 VAE's, or the DiT, modules or tokenizer
    of any DiT phase (packaged.json says which phase the demo set holds); None for other outputs."""
    path = Path(run_path)
    key = "vae" if run_path == VAE_OUTPUT else DEMO_SET_KEY.get(path.name) if path.parent.name in STAGE3_CHAIN else None
    return REPO / DEMO_SET[key] if key else None


PACKAGED = {run: demo_set_file(run).relative_to(REPO).as_posix()
            for run in (VAE_OUTPUT, *(f"runs/demo128/{LATEST_STAGE3}/{f}" for f in STAGE3_WEIGHTS))}


def committed_path(run_path: str) -> Path:
    """runs/demo128/<rest> -> lab/runs/demo128/<rest>."""
    return COMMITTED / Path(run_path).relative_to("runs/demo128")


def packaged_copy(run_path: str) -> Path | None:
    """The demo set's file that stands for this step output (PACKAGED), when it is in models/."""
    path = REPO / PACKAGED[run_path] if run_path in PACKAGED else None
    return path if path is not None and path.is_file() else None


def packaged_record() -> dict[str, str]:
    """{step output: SHA-256} of the outputs --save found in the demo set."""
    path = REPO / PACKAGED_RECORD
    return json.loads(path.read_text()) if path.is_file() else {}


def packaged_is_output(packaged: Path, run_path: str, name: str, record: dict[str, str]) -> bool:
    """Whether the demo set's file is this step's output: by the SHA-256 --save recorded (record:
    packaged_record()), or for a VAE by the training record in the file."""
    recorded = record.get(run_path)
    if recorded is not None:
        return file_sha256(packaged) == recorded
    return name in VAE_CHAIN and vae_trained_for(packaged, name)


def vae_trained_for(path: Path, name: str) -> bool:
    """Whether the VAE file was trained by step ``name``'s config: the steps and the training settings recorded
    in the file are the config's."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        recorded = json.loads((f.metadata() or {}).get("im_animation_vae_train", "{}"))
    config = phase_data(name)

    def agrees(want, have) -> bool:
        if isinstance(want, dict):
            return isinstance(have, dict) and all(agrees(v, have.get(k)) for k, v in want.items())
        return want == have

    return recorded.get("steps") == config["steps"] and agrees(config["train"], recorded)


def demo_set_twin(run_path: str) -> Path | None:
    """A demo-set file with the same bytes as this step output (e.g. the tokenizer, which Stage 1 wrote and every
    later run passes on unchanged), if any: it is then committed once, there."""
    out = REPO / run_path
    for rel in DEMO_SET.values():
        twin = REPO / rel
        if twin.is_file() and twin.stat().st_size == out.stat().st_size and filecmp.cmp(out, twin, shallow=False):
            return twin
    return None


def save_outputs() -> None:
    # entries of earlier DiT phases, whose weights the demo set no longer holds, are dropped
    record = {f: sha for f, sha in packaged_record().items()
              if f in PACKAGED or Path(f).parent.name not in STAGE3_CHAIN}
    for name, marker in ((n, m) for n, _, m in STEPS):
        if name not in KEEP or not done(name, marker):
            continue
        for f in KEEP[name]:
            if not (REPO / f).is_file():
                continue
            packaged = packaged_copy(f)
            twin = packaged if packaged and filecmp.cmp(REPO / f, packaged, shallow=False) else demo_set_twin(f)
            if twin is not None:
                record[f] = file_sha256(twin)
                committed_path(f).unlink(missing_ok=True)  # a copy saved before the demo set held these bytes
                print(f"not saved {f}: the same as {twin.relative_to(REPO)} (--restore takes it from there)")
                continue
            committed_path(f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(REPO / f, committed_path(f))
            print("saved", committed_path(f).relative_to(REPO))
    (REPO / PACKAGED_RECORD).parent.mkdir(parents=True, exist_ok=True)
    (REPO / PACKAGED_RECORD).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")


def restore_outputs() -> None:
    record = packaged_record()
    demo_set_shas = {file_sha256(REPO / rel): REPO / rel for rel in DEMO_SET.values() if (REPO / rel).is_file()}
    wanted = {f: name for name, files in KEEP.items() for f in files}
    # The DiT phase whose weights the demo set holds is the one --save recorded, which is not the chain's last
    # once a continuation has been added to STAGE3_CHAIN (KEEP then names the run still to train).
    wanted.update({f: Path(f).parent.name for f in record if f not in wanted})
    for f, name in wanted.items():
        if (REPO / f).exists():
            continue
        src = committed_path(f)
        if not src.is_file():  # committed once, as the demo set's file
            src = demo_set_file(f)
            if src is None or not src.is_file() or not packaged_is_output(src, f, name, record):
                src = demo_set_shas.get(record.get(f))  # the same bytes in another demo-set file
                if src is None:
                    continue
        (REPO / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, REPO / f)
        print(f"restored {f} (from {src.relative_to(REPO)})")


def gate_passed() -> bool:
    return bool(json.loads((REPO / GATE_FILE).read_text()).get("passes"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--list", action="store_true", help="print the recipe's steps and trials, and whether each is "
                    "done")
    ap.add_argument("--only", help="run only these steps or trials (comma-separated names)")
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--force", action="store_true", help="train the DiT even when the VAE gate is not met")
    ap.add_argument("--save", action="store_true", help="copy the finished steps' outputs into lab/runs/demo128/")
    ap.add_argument("--restore", action="store_true", help="copy lab/runs/demo128/ back into runs/demo128/ (the "
                    "dim-16 VAE from models/vae/ when only the demo set holds it)")
    args = ap.parse_args()
    if args.save or args.restore:
        save_outputs() if args.save else restore_outputs()
        return 0
    only = set(args.only.split(",")) if args.only else None
    if args.list:
        print(f"recipe {RECIPE}: {len(STEPS)} steps, then {len(TRIALS)} trials (run only with --only)")
    for name, cmd, marker in STEPS + TRIAL_STEPS:
        state = "done" if done(name, marker) else "trial" if name in TRIALS else "to do"
        if args.list:
            print(f"{name:16s} {state:6s} {' '.join(cmd[1:] if cmd[0] == sys.executable else cmd)}")
            continue
        if (only and name not in only) or (name in TRIALS and not only) or state == "done":
            continue
        if PHASES[name]["stage"] in ("cache", "stage3") and not args.force and not gate_passed():
            print(f"the VAE gate is not met ({GATE_FILE}): the DiT would learn from latents that "
                  "lose the motion. Improve the VAE, or pass --force", file=sys.stderr)
            return 2
        if name in GPU_PHASES and args.device != "cuda":
            print(f"step {name} trains on live clips on a GPU (its config says device cuda; about 7 minutes on one "
                  f"H200, hours on a 2-core CPU): rerun with --device cuda on a GPU machine, or take its weights "
                  f"from the demo set (--restore)", file=sys.stderr)
            return 3
        if name in DEVICE_FIELD and args.device != "cpu":
            cmd = cmd + ["--set", f"{DEVICE_FIELD[name]}={args.device}"]
        print(f"== {name}: {' '.join(cmd)}", flush=True)
        if subprocess.run(cmd, cwd=REPO).returncode:
            print(f"step {name} failed; fix it and rerun (finished steps are skipped)", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
