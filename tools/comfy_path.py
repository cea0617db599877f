"""Find the ComfyUI the tests and tools run against ($COMFYUI_PATH, the ComfyUI containing this pack,
../shared/ComfyUI), and import it into this process.

A process imports ComfyUI's own modules (comfy, folder_paths, its nodes.py) from the host's root, which must come
before this repository on the module search path: the repository's ``nodes/`` package would otherwise shadow the
host's ``nodes.py``. Nothing here edits the search path; the environment sets the order instead (``comfyui_env``): the
Makefile and scripts/gpu_check.sh run Python with it, and the test suite's conftest puts the host first itself.
"""

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def find_comfyui() -> Path:
    candidates = []
    if os.environ.get("COMFYUI_PATH"):
        candidates.append(Path(os.environ["COMFYUI_PATH"]))
    if REPO.parent.name == "custom_nodes":
        candidates.append(REPO.parent.parent)
    candidates.append(REPO.parent / "shared" / "ComfyUI")
    for c in candidates:
        if (c / "main.py").is_file() and (c / "comfy").is_dir():
            return c.resolve()
    raise RuntimeError(f"ComfyUI not found; looked in {[str(c) for c in candidates]}. Set COMFYUI_PATH.")


def comfyui_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """``env`` (default: this process's) with the search order a process that imports ComfyUI needs: no script or
    working directory first (PYTHONSAFEPATH), then the host's root, then this repository (PYTHONPATH)."""
    env = dict(os.environ if env is None else env)
    env.update(PYTHONSAFEPATH="1", PYTHONPATH=os.pathsep.join((str(find_comfyui()), str(REPO))))
    return env


def without_comfyui_env(env: dict[str, str]) -> dict[str, str]:
    """``env`` less the search order of ``comfyui_env``, for a ComfyUI server process: its main.py finds its own
    modules, and this repository is loaded from custom_nodes, never from the search path."""
    return {k: v for k, v in env.items() if k not in ("PYTHONSAFEPATH", "PYTHONPATH")}


def import_comfyui() -> Path:
    """Import ComfyUI's modules (comfy, folder_paths, nodes, ...) into this process, on the CPU when no CUDA device is
    present. Returns the host's root. Raises RuntimeError naming the fix when the search order is not set up."""
    root = find_comfyui()
    try:
        import torch
        from comfy.cli_args import args

        if not torch.cuda.is_available():
            args.cpu = True  # must be set before comfy.model_management is first imported
        import nodes  # ComfyUI's nodes.py; this pack's nodes/ package must not shadow it
    except ImportError as e:
        raise RuntimeError(_how_to_import(root, f"importing ComfyUI failed ({e})")) from None
    where = Path(getattr(nodes, "__file__", "") or ".").resolve().parent
    if where != root:
        raise RuntimeError(_how_to_import(root, f"'nodes' resolves to {where}, not ComfyUI's nodes.py in {root}"))
    return root


def _how_to_import(root: Path, what: str) -> str:
    return (f"{what}: this command imports ComfyUI in-process, so ComfyUI's folder must come first on the module "
            f"search path. Run it through make (which sets this), or as: PYTHONSAFEPATH=1 "
            f"PYTHONPATH={root}{os.pathsep}{REPO} {Path(sys.executable).name} -m ...")
