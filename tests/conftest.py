"""The suite imports ComfyUI in-process (tools/inprocess.py, the fixture models, the tests that compare with stock
ComfyUI code): its folder goes first on the module search path, ahead of this repository, whose nodes/ package
would otherwise shadow ComfyUI's nodes.py (tools/comfy_path.py; outside the suite the environment does this)."""

import sys

from tools.comfy_path import find_comfyui

_ROOT = str(find_comfyui())
if sys.path[:1] != [_ROOT]:
    sys.path.insert(0, _ROOT)
