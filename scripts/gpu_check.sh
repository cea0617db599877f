#!/usr/bin/env bash
# GPU check: this pack through ComfyUI on one CUDA GPU (the demo workflow with default flags, --lowvram and
# --novram against a CPU run), the Wan2.2 TI2V-5B pipeline at its exact shapes with random weights (bf16 and
# fp8_e4m3fn through the stock UNETLoader, patched vs native s/step, peak memory), the released-size motion
# tokenizer, and one FSDP Stage-3 step if time remains. Nothing is downloaded. Details: lab/bench/gpu_check.py.
#
#   bash scripts/gpu_check.sh OUT.json            # one CUDA GPU, at most 8 minutes
#   bash scripts/gpu_check.sh --smoke OUT.json    # every part at tiny sizes on the CPU, under 5 minutes
#
# Writes OUT.json ({"device", "parts": {"comfy_demo", "comfy_5b", "tokenizer", "fsdp_step"}}, each part with
# "ok", its figures and "error" when it failed) and OUT.md, a Markdown summary. Exit status 0 when every part
# is ok, 1 when one is not, 2 when there is no GPU (without --smoke). PYTHON=... picks the interpreter (default:
# the host's environment, .venv-033, when it exists); COMFYUI_PATH picks the ComfyUI (tools/comfy_path.py).
set -euo pipefail
cd "$(dirname "$0")/.."
SMOKE=()
if [ "${1:-}" = "--smoke" ]; then SMOKE=(--smoke); shift; fi
OUT="${1:-runs/gpu_check.json}"
if [ -z "${PYTHON:-}" ] && [ -x .venv-033/bin/python ]; then PY=.venv-033/bin/python; else PY="${PYTHON:-python}"; fi
if [ ${#SMOKE[@]} -eq 0 ]; then
  if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu_check: no CUDA device visible to $PY; run it on a GPU machine (on the CPU: --smoke)" >&2
    exit 2
  fi
  "$PY" -c "import torch; print('gpu_check:', torch.__version__, torch.cuda.get_device_name(0))"
fi
# ComfyUI's folder ahead of this repository on the module search path (tools/comfy_path.py: comfyui_env)
COMFY_ROOT="$("$PY" -c 'from tools.comfy_path import find_comfyui; print(find_comfyui())')"
export PYTHONSAFEPATH=1 PYTHONPATH="$COMFY_ROOT:$PWD"
# lab.bench.gpu_check keeps to its own 470 s (290 s with --smoke) and time-boxes each part; this is the backstop
timeout --signal=INT --kill-after=20 500 "$PY" -m lab.bench.gpu_check "${SMOKE[@]}" --out "$OUT"
"$PY" - "$OUT" <<'PY'
import json, sys
parts = json.load(open(sys.argv[1]))["parts"]
bad = [name for name, part in parts.items() if not part.get("ok")]
print("gpu_check: every part ok" if not bad else f"gpu_check: NOT ok: {bad}", file=sys.stderr)
sys.exit(1 if bad else 0)
PY
