"""make train-demo: the 128-pixel demo model set, trained from scratch in order with the seeds in its configs.

Every step is one command of at most 90 minutes on the 2-core CPU machine (docs/training.md gives each one's
time); a step whose output exists is skipped, so rerunning the script continues the chain. The VAE gate
(scripts/vae_gate.py) runs before any DiT training and stops the chain when the VAE loses the motion (--force
goes on anyway).

    python scripts/train_demo.py [--list] [--only NAME[,NAME]] [--device cpu|cuda] [--force]
    python scripts/train_demo.py --save      # copy the finished steps' outputs into models/demo128/ (for git)
    python scripts/train_demo.py --restore   # copy them back into runs/demo128/: those steps count as done

A chain longer than one machine's life continues from the committed outputs: --save after a step improves
the figures, commit models/demo128/, and on a fresh clone --restore before continuing. Weights that
scripts/package_demo.py has made the demo set's (the dim-16 VAE in models/vae/; the latest DiT phase's DiT,
modules and tokenizer) are committed once: --save leaves them out of models/demo128/ and records their SHA-256
in models/demo128/packaged.json, and --restore takes them from the demo set when they match. So is any other
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

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from im_animation_core.train.cache import file_sha256  # noqa: E402
from im_animation_core.train.outputs import outputs_path  # noqa: E402
from tools.demo_set import SOURCES  # noqa: E402  (the demo set's files, where make demo looks for them)

CONFIGS = "configs/demo128"
TRAIN = [sys.executable, "-m", "im_animation_core.train"]

# The retargeter's Stage-2 runs, each a continuation of the one before it (docs/training.md says why each).
STAGE2_CHAIN = ("stage2", "stage2_more", "stage2_self", "stage2_self_more", "stage2_mix", "stage2_mix2")
LATEST_STAGE2 = STAGE2_CHAIN[-1]  # the retargeter the DiT-first phase reads (configs/demo128/stage3_dit.json)
# The DiT-first phase and its continuations, then the joint phase (the retargeter trained too), each starting
# from the weights the one before it exported. The first clip cache serves the phases up to stage3_joint7: the
# DiT-first phases read its motion maps (it is keyed by their frozen retargeter's tensors), the joint phases only
# its other fields; later phases read caches of clips from other generator seeds (CACHES).
# The phases whose config says device "cuda" train on live clips (no cache) on a GPU: scripts/gpu_train.sh; the
# CPU phases after them read cached clips again.
STAGE3_CHAIN = ("stage3_dit", "stage3_dit2", "stage3_dit3", "stage3_dit4", "stage3_dit5", "stage3_joint",
                "stage3_joint2", "stage3_joint3", "stage3_joint4", "stage3_joint5", "stage3_joint6", "stage3_gpu1",
                "stage3_gpu2", "stage3_joint7", "stage3_joint8", "stage3_joint10")
LATEST_STAGE3 = STAGE3_CHAIN[-1]  # the demo set's DiT, modules and tokenizer (scripts/package_demo.py)
CHAINS = (STAGE2_CHAIN, STAGE3_CHAIN)
_STAGE3_CONFIGS = {name: json.loads((REPO / CONFIGS / f"{name}.json").read_text()) for name in STAGE3_CHAIN}
GPU_PHASES = tuple(name for name, c in _STAGE3_CONFIGS.items() if c.get("device") == "cuda")
# Each cache folder is built once, by the first phase that reads it, for the phase reading it that reads the most
# clips: a config reading fewer reads its first clips (generated clips do not depend on how many there are), so
# the earlier phases see what they saw when they ran. A later phase may read a folder of its own, built from
# another generator seed: clips the DiT has not seen.
CACHE_READERS: dict[str, list[str]] = {}  # {cache folder: the phases reading it, in chain order}
for _name, _config in _STAGE3_CONFIGS.items():
    if _config["data"].get("cache"):
        CACHE_READERS.setdefault(_config["data"]["cache"], []).append(_name)
# {cache folder: (the phase whose config builds it, the clips it holds)}
CACHES = {folder: (readers[0], max(_STAGE3_CONFIGS[n]["data"]["num_samples"] for n in readers))
          for folder, readers in CACHE_READERS.items()}
FIRST_CACHE = next(iter(CACHES))


def cache_step(folder: str) -> str:
    """The chain's step that builds this cache folder: "cache" for the first, the folder's name after."""
    return "cache" if folder == FIRST_CACHE else Path(folder).name


CACHE_STEPS = {cache_step(folder): folder for folder in CACHES}


def cache_command(folder: str) -> list[str]:
    phase, clips = CACHES[folder]
    return TRAIN + ["cache", "--config", f"{CONFIGS}/{phase}.json", "--set", f"data.num_samples={clips}"]


def stage3_steps():
    for name in STAGE3_CHAIN:
        folder = _STAGE3_CONFIGS[name]["data"].get("cache")
        if folder and CACHES[folder][0] == name:
            yield cache_step(folder), cache_command(folder), f"{folder}/index.json"
        yield name, TRAIN + ["stage3", "--config", f"{CONFIGS}/{name}.json"], outputs_path(f"runs/demo128/{name}")


# (name, command, the file whose presence means the step is done)
STEPS = (
    ("vae", TRAIN + ["vae", "--config", f"{CONFIGS}/vae.json"], "runs/demo128/vae/ima_demo128_wan21_vae.safetensors"),
    ("vae16", TRAIN + ["vae", "--config", f"{CONFIGS}/vae16.json"],
     "runs/demo128/vae16/ima_demo128_wan21_vae.safetensors"),
    ("vae_gate", [sys.executable, "scripts/vae_gate.py", "--config", f"{CONFIGS}/vae16.json", "--pairs", "16",
                  "--json", "runs/demo128/vae_gate.json"], "runs/demo128/vae_gate.json"),
    ("stage1", TRAIN + ["stage1", "--config", f"{CONFIGS}/stage1.json"], outputs_path("runs/demo128/stage1")),
    *((name, TRAIN + ["stage2", "--config", f"{CONFIGS}/{name}.json"], outputs_path(f"runs/demo128/{name}"))
      for name in STAGE2_CHAIN),
    *stage3_steps(),
)
# the config field that picks the device, per step (the VAE trainer's sits under train)
DEVICE_FIELD = {"vae": "train.device", "vae16": "train.device", "stage1": "device",
                **dict.fromkeys((*CACHE_STEPS, *STAGE2_CHAIN, *STAGE3_CHAIN), "device")}


def done(name: str, marker: str | Path) -> bool:
    for chain in CHAINS:  # a continuation's output stands for the runs it continued (only it is kept)
        if name in chain:
            later = chain[chain.index(name):]
            return any((REPO / outputs_path(f"runs/demo128/{n}")).is_file() for n in later)
    last_reader = CACHE_READERS[CACHE_STEPS[name]][-1] if name in CACHE_STEPS else None
    if last_reader and done(last_reader, outputs_path(f"runs/demo128/{last_reader}")):
        return True  # no phase left to read it (the weights came from the demo set: --restore)
    path = REPO / marker
    if not path.is_file():
        return False
    if name in CACHE_STEPS:  # a cache built for fewer clips is grown (only the new clips are built)
        index = json.loads(path.read_text())
        return bool(index.get("complete")) and index.get("clips", 0) >= CACHES[CACHE_STEPS[name]][1]
    if name in ("vae", "vae16"):  # rewritten every save_every steps: done when it holds the last step
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            trained = json.loads((f.metadata() or {}).get("im_animation_vae_train", "{}")).get("steps")
        return trained == json.loads((REPO / CONFIGS / f"{name}.json").read_text())["steps"]
    return True


COMMITTED = REPO / "models" / "demo128"
# {the demo set's file (demo.SOURCES key): the DiT phase's output it is copied from}
STAGE3_FILES = {"dit": "wan_dit.safetensors", "modules": "im_animation_modules.safetensors",
                "tokenizer": "motion_tokenizer.safetensors"}
STAGE3_WEIGHTS = tuple(STAGE3_FILES.values())
# What each step leaves that a later step or a continuation reads (the cache is rebuilt: it is large and
# deterministic).
KEEP = {
    "vae": ["runs/demo128/vae/ima_demo128_wan21_vae.safetensors"],
    "vae16": ["runs/demo128/vae16/ima_demo128_wan21_vae.safetensors", "runs/demo128/vae16/metrics.jsonl"],
    "vae_gate": ["runs/demo128/vae_gate.json"],
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


# Step outputs that the demo model set may hold already, as scripts/package_demo.py copies them into models/:
# {the step's output: the demo set's file (demo.SOURCES, where make demo looks)}, for the chain's last DiT phase.
# Committed once, in the demo set; --save records the SHA-256 of each such output in PACKAGED_RECORD, and
# --restore copies a demo-set file back only when it matches.
VAE_OUTPUT = "runs/demo128/vae16/ima_demo128_wan21_vae.safetensors"
DEMO_SET_KEY = {f: key for key, f in STAGE3_FILES.items()}  # a DiT phase's output file -> its demo.SOURCES key
DEMO_SET = {key: SOURCES[key].relative_to(REPO).as_posix() for key in ("vae", *STAGE3_FILES)}
PACKAGED_RECORD = "models/demo128/packaged.json"


def demo_set_file(run_path: str) -> Path | None:
    """The demo set's file that may hold this step output: the dim-16 VAE's, or the DiT, modules or tokenizer
    of any DiT phase (packaged.json says which phase the demo set holds); None for other outputs."""
    path = Path(run_path)
    key = "vae" if run_path == VAE_OUTPUT else DEMO_SET_KEY.get(path.name) if path.parent.name in STAGE3_CHAIN else None
    return REPO / DEMO_SET[key] if key else None


PACKAGED = {run: demo_set_file(run).relative_to(REPO).as_posix()
            for run in (VAE_OUTPUT, *(f"runs/demo128/{LATEST_STAGE3}/{f}" for f in STAGE3_WEIGHTS))}


def committed_path(run_path: str) -> Path:
    """runs/demo128/<rest> -> models/demo128/<rest>."""
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
    return name in ("vae", "vae16") and vae_trained_for(packaged, name)


def vae_trained_for(path: Path, name: str) -> bool:
    """Whether the VAE file was trained by step ``name``'s config: the steps and the training settings recorded
    in the file are the config's."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        recorded = json.loads((f.metadata() or {}).get("im_animation_vae_train", "{}"))
    config = json.loads((REPO / CONFIGS / f"{name}.json").read_text())

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
    return bool(json.loads((REPO / "runs/demo128/vae_gate.json").read_text()).get("passes"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--list", action="store_true", help="print the steps and whether each is done")
    ap.add_argument("--only", help="run only these steps (comma-separated names)")
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--force", action="store_true", help="train the DiT even when the VAE gate is not met")
    ap.add_argument("--save", action="store_true", help="copy the finished steps' outputs into models/demo128/")
    ap.add_argument("--restore", action="store_true", help="copy models/demo128/ back into runs/demo128/ (the "
                    "dim-16 VAE from models/vae/ when only the demo set holds it)")
    args = ap.parse_args()
    if args.save or args.restore:
        save_outputs() if args.save else restore_outputs()
        return 0
    only = set(args.only.split(",")) if args.only else None
    for name, cmd, marker in STEPS:
        state = "done" if done(name, marker) else "to do"
        if args.list:
            print(f"{name:12s} {state:6s} {' '.join(cmd[1:] if cmd[0] == sys.executable else cmd)}")
            continue
        if (only and name not in only) or state == "done":
            continue
        if (name in CACHE_STEPS or name in STAGE3_CHAIN) and not args.force and not gate_passed():
            print("the VAE gate is not met (runs/demo128/vae_gate.json): the DiT would learn from latents that "
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
