#!/usr/bin/env bash
# tools/setup_venv.sh VENV COMFYUI: a virtual environment for one ComfyUI host. The tested torch pair first, then
# the host's requirements.txt, this pack's requirements and the development tools, torch held at the pair by
# tools/constraints.txt (a host's unpinned `torch` must not upgrade it).
set -euo pipefail
venv=$1 host=$2
cd "$(dirname "$0")/.."
test -f "$host/requirements.txt" || { echo "no ComfyUI at $host (requirements.txt missing)" >&2; exit 1; }
test -x "$venv/bin/python" || python3 -m venv "$venv"
pip=("$venv/bin/python" -m pip install -q --disable-pip-version-check)
"${pip[@]}" torch==2.14.1 torchvision==0.29.2
"${pip[@]}" -c tools/constraints.txt -r "$host/requirements.txt" -r requirements.txt -r requirements-dev.txt
"$venv/bin/python" - <<'PY'
import torch, torchvision
assert (torch.__version__.split("+")[0], torchvision.__version__.split("+")[0]) == ("2.14.1", "0.29.2"), (
    torch.__version__, torchvision.__version__)
PY
