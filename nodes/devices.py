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


def patcher_for(module: torch.nn.Module) -> comfy.model_patcher.ModelPatcher:
    """Wrap a module so ComfyUI loads it to the GPU only while it is used and offloads it afterwards."""
    return comfy.model_patcher.ModelPatcher(module, load_device=mm.get_torch_device(),
                                            offload_device=mm.unet_offload_device())


def loaded(patcher: comfy.model_patcher.ModelPatcher) -> torch.nn.Module:
    """Load the patcher's module onto its device now and return it."""
    mm.load_models_gpu([patcher])
    return patcher.model


def interrupt_check() -> None:
    mm.throw_exception_if_processing_interrupted()
