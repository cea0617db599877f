"""Find the ComfyUI the tests run against: $COMFYUI_PATH, the ComfyUI containing this pack, ../shared/ComfyUI."""

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


def add_comfyui_to_path() -> Path:
    """Make ComfyUI's modules (comfy, folder_paths, ...) importable in this process."""
    root = find_comfyui()
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    import torch
    from comfy.cli_args import args

    if not torch.cuda.is_available():
        args.cpu = True  # must be set before comfy.model_management is first imported
    import nodes  # ComfyUI's nodes.py; this pack's nodes/ package must not shadow it

    assert Path(nodes.__file__).resolve().parent == root, f"'nodes' resolves to {nodes.__file__}, not ComfyUI's"
    return root
