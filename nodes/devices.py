"""Device and dtype choices for the pack's own modules, taken from ComfyUI's model management."""

import comfy.model_management as mm
import comfy.model_patcher
import torch

DTYPES = ["auto", "fp32", "fp16", "bf16"]


def inference_dtype(choice: str) -> torch.dtype:
    """'auto': what ComfyUI would pick for the GPU (fp16/bf16), fp32 on the CPU."""
    if choice != "auto":
        return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[choice]
    device = mm.get_torch_device()
    if mm.should_use_bf16(device):
        return torch.bfloat16
    if mm.should_use_fp16(device):
        return torch.float16
    return torch.float32


class WholeModulePatcher(comfy.model_patcher.ModelPatcher):
    """A ModelPatcher that loads its module whole or not at all.

    ComfyUI's low-VRAM loading (``--lowvram``, ``--novram``, or a GPU short of memory) moves only the layers
    that fit and runs the rest through comfy.ops' cast-on-the-fly layers. The pack's modules are plain torch
    layers, which that path leaves where they are: the tokenizer, retargeter or expression blocks would run
    with part of their weights on the CPU and their inputs on the GPU. They are small beside the DiT, so they
    are always loaded completely, and unloaded completely when ComfyUI needs the memory back."""

    def load(self, device_to=None, lowvram_model_memory=0, force_patch_weights=False, full_load=False):
        return super().load(device_to, lowvram_model_memory=0, force_patch_weights=force_patch_weights,
                            full_load=True)

    def partially_unload(self, device_to, memory_to_free=0, force_patch_weights=False):
        return 0  # nothing freed: ComfyUI's model_unload then offloads the whole module


def patcher_for(module: torch.nn.Module) -> comfy.model_patcher.ModelPatcher:
    """Wrap a module so ComfyUI loads it to the GPU only while it is used and offloads it afterwards."""
    return WholeModulePatcher(module, load_device=mm.get_torch_device(), offload_device=mm.unet_offload_device())


def loaded(patcher: comfy.model_patcher.ModelPatcher) -> torch.nn.Module:
    """Load the patcher's module onto its device now and return it."""
    mm.load_models_gpu([patcher], force_full_load=True)
    return patcher.model


def interrupt_check() -> None:
    mm.throw_exception_if_processing_interrupted()
