"""Import ComfyUI and this pack into the test process (CPU), the way ComfyUI's loader does, for tests that
compare the pack's nodes with stock ComfyUI code paths tensor by tensor."""

import importlib.util
import sys

from .comfy_path import REPO, add_comfyui_to_path

PACKAGE = "comfyui_im_animation_under_test"


def load_pack():
    """Return the pack imported as a package (its nodes use relative imports, like under custom_nodes)."""
    add_comfyui_to_path()
    if PACKAGE in sys.modules:
        return sys.modules[PACKAGE]
    spec = importlib.util.spec_from_file_location(PACKAGE, REPO / "__init__.py", submodule_search_locations=[str(REPO)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[PACKAGE] = module
    spec.loader.exec_module(module)
    return module
