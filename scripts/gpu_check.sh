#!/usr/bin/env bash
# GPU check of the paper-scale path (Wan2.2 TI2V-5B) on one CUDA GPU: random weights, nothing downloaded.
# Measures the motion tokenizer (frames/s, TFLOP/s against its 183 GFLOP per frame), one sampling step of the
# 5B DiT patched vs native, and one FSDP Stage-3 optimizer step at 81 frames of 480x832 with per-block
# activation checkpointing (s/step, peak memory). Details: bench/gpu_check.py.
#
#   bash scripts/gpu_check.sh [OUT.json]        (default runs/gpu_check.json; PYTHON=... picks the interpreter)
#
# Capped at 10 minutes; the figures go into docs/benchmarks.md ("GPU check").
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python}"
OUT="${1:-runs/gpu_check.json}"
if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "gpu_check: no CUDA device visible to $PY; run it on a GPU machine (the CPU logic: $PY -m bench.gpu_check --smoke)" >&2
  exit 2
fi
"$PY" -c "import torch; print('gpu_check:', torch.__version__, torch.cuda.get_device_name(0))"
exec timeout --signal=INT --kill-after=20 600 "$PY" -m bench.gpu_check --out "$OUT"
