#!/usr/bin/env bash
# A demo-set training run on one CUDA GPU, sized to a wall-clock budget, from a checkout that holds only the
# committed demo set (a fresh GPU machine: no runs/ folder).
#
#   bash scripts/gpu_train.sh CONFIG [BUDGET_S] [DEST]
#
# CONFIG: a Stage-3 config file, or a recipe's phase as RECIPE:PHASE (configs/demo128.json:stage3_gpu1).
#
# 1. Stages the committed weights the configs read (python -m lab.train_demo --restore): lab/runs/demo128/*
#    into runs/demo128/, and the demo set's DiT, modules, tokenizer and VAE at the paths
#    lab/runs/demo128/packaged.json records, when their SHA-256 matches.
# 2. Probes the config's step time on this GPU (PROBE_STEPS steps into runs/gpu_probe), then runs the config
#    with steps = BUDGET_S / (seconds per step) rounded down to 50, the learning-rate decay over the last 40%.
#    The steps actually run go into the run's config.json; commit them into CONFIG (the recipe's phase) so that
#    a rerun is the plain `python -m im_animation_core.train stage3 --recipe RECIPE --phase PHASE`.
#    A run stopped at its time limit exports its last checkpoint instead (save_every apart).
# 3. Copies the run's exports, metrics, config and a summary (gpu_train.json) into DEST when given.
#
# PROFILE=1 first prints where a step's time goes (python -m lab.bench.profile_stage3: the loader alone, the step on
# a batch in memory, the profiler's operator table, the device's busy share).
# STEPS=N skips the probe and runs N steps (the run is still stopped after BUDGET_S * 5/4 + 30 s).
# PYTHON picks the interpreter (default python3); the GPU's use is sampled every 15 s into DEST/gpu_use.csv.
set -uo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
CFG="$1"
BUDGET="${2:-300}"
DEST="${3:-}"
PROBE_STEPS="${PROBE_STEPS:-60}"
[ -n "$DEST" ] && mkdir -p "$DEST"

"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" || {
  echo "gpu_train: no CUDA device visible to $PY" >&2; exit 2; }
"$PY" -c "import torch; print('gpu_train:', torch.__version__, torch.cuda.get_device_name(0))"

if [[ "$CFG" == *:* ]]; then  # a recipe's phase: its resolved config, as a file the commands below read
  mkdir -p runs
  "$PY" -c "import json, sys; from im_animation_core.train.recipe import recipe_phase_config as r
json.dump(r(sys.argv[1], sys.argv[2])[1], open(sys.argv[3], 'w'), indent=2)" "${CFG%%:*}" "${CFG#*:}" \
    runs/gpu_train_config.json || exit 1
  CFG=runs/gpu_train_config.json
fi

# The committed runs and the demo set's weights, back where the configs read them.
"$PY" -m lab.train_demo --restore || exit 3

if [ -n "${PROFILE:-}" ]; then  # where the step's time goes, printed before training (lab/bench/profile_stage3.py)
  "$PY" -m lab.bench.profile_stage3 --config "$CFG" || echo "gpu_train: the profile failed; training anyway"
fi

RUN=$("$PY" -c "import json,sys; print(json.load(open(sys.argv[1]))['output_dir'])" "$CFG")
rm -rf runs/gpu_probe "$RUN"
if [ -n "${STEPS:-}" ]; then  # the pace is known: no probe
  SPS=None
else
  t0=$(date +%s)
  "$PY" -m im_animation_core.train stage3 --config "$CFG" --set steps="$PROBE_STEPS" --set output_dir=runs/gpu_probe \
    --set log_every=20 --set save_every=100000 --set progress=false || exit 4
  t1=$(date +%s)
  SPS=$("$PY" -c "import json; print(json.loads(open('runs/gpu_probe/metrics.jsonl').read().splitlines()[-1])['sec_per_step'])")
  STEPS=$("$PY" -c "print(max(50, int($BUDGET / $SPS) // 50 * 50))")
  echo "gpu_train: probe ${PROBE_STEPS} steps in $((t1 - t0)) s (process included), ${SPS} s/step steady"
fi
DECAY=$((STEPS * 2 / 5))
echo "gpu_train: running ${STEPS} steps, decay ${DECAY}"

if [ -n "$DEST" ]; then
  nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv -l 15 > "$DEST/gpu_use.csv" 2>/dev/null &
  SMI=$!
fi
t2=$(date +%s)
timeout --signal=INT --kill-after=20 $((BUDGET * 5 / 4 + 30)) \
  "$PY" -m im_animation_core.train stage3 --config "$CFG" --set steps="$STEPS" --set optim.decay_steps="$DECAY" \
  --set progress=false
RC=$?
t3=$(date +%s)
[ -n "${SMI:-}" ] && kill "$SMI" 2>/dev/null
echo "gpu_train: run exit $RC after $((t3 - t2)) s"
if [ "$RC" != 0 ] && [ -f "$RUN/checkpoints/latest" ]; then
  # stopped early (the probe misjudged the pace): export the last checkpoint's weights instead
  CKPT=$(cat "$RUN/checkpoints/latest")
  echo "gpu_train: exporting $CKPT"
  "$PY" -m im_animation_core.train stage3 --config "$CFG" --set steps="$((10#${CKPT#step_}))" \
    --set optim.decay_steps="$DECAY" --set progress=false --resume "$RUN/checkpoints/$CKPT"
fi

if [ -n "$DEST" ]; then
  for f in wan_dit.safetensors im_animation_modules.safetensors metrics.jsonl config.json outputs.json; do
    [ -f "$RUN/$f" ] && cp "$RUN/$f" "$DEST/"
  done
  "$PY" - "$DEST/gpu_train.json" <<EOF
import json, sys, torch
json.dump({"config": "$1", "gpu": torch.cuda.get_device_name(0), "torch": torch.__version__,
           "probe_steps": $PROBE_STEPS, "probe_sec_per_step": $SPS, "steps": $STEPS, "decay_steps": $DECAY,
           "run_seconds": $((t3 - t2)), "exit": $RC}, open(sys.argv[1], "w"), indent=2)
EOF
fi
exit $RC
