"""Import ComfyUI and this pack into the test process (CPU), the way ComfyUI's loader does, for tests that
compare the pack's nodes with stock ComfyUI code paths tensor by tensor."""

import importlib.util
import sys

from .comfy_path import REPO, import_comfyui

PACKAGE = "comfyui_im_animation_under_test"


def load_pack():
    """Return the pack imported as a package (its nodes use relative imports, like under custom_nodes)."""
    import_comfyui()
    if PACKAGE in sys.modules:
        return sys.modules[PACKAGE]
    spec = importlib.util.spec_from_file_location(PACKAGE, REPO / "__init__.py", submodule_search_locations=[str(REPO)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[PACKAGE] = module
    spec.loader.exec_module(module)
    return module


def stock_first_frame_latent(model, identity, frames: int) -> dict:
    """The stock TI2V input the IM-Animation sampler is compared with, built as Wan22ImageToVideoLatent builds
    it (independently of the sampler's code): ``identity`` [1,C,1,h,w] clean in latent frame 0 with
    noise_mask 0, the latent format's empty value (noise_mask 1) in the ``frames`` frames after it.
    Returns the LATENT dict for KSampler."""
    import torch

    latent_format = model.get_model_object("latent_format")
    latent = torch.zeros(1, identity.shape[1], 1 + frames, *identity.shape[-2:])
    latent[:, :, :1] = identity
    mask = torch.ones(1, 1, 1 + frames, *identity.shape[-2:])
    mask[:, :, :1] = 0.0
    return {"samples": latent_format.process_out(latent) * mask + latent * (1.0 - mask), "noise_mask": mask}
