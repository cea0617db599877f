"""Apply IM-Animation: MODEL -> MODEL with the motion and expression adapters (nodes.wan_patch)."""

from comfy_api.latest import io

from . import socket_checks, types
from .wan_patch import apply_im_animation


class ApplyIMAnimation(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            **types.ALIASES,
            node_id="IMA_ApplyModel",
            display_name="Apply IM-Animation",
            category=types.CATEGORY,
            description="Patches a Wan model with the IM-Animation modules (motion channels, expression blocks). "
                        "Sample it with any sampler, with prompts and latent from IM-Animation Conditioning.",
            inputs=[
                io.Model.Input("model", tooltip="Wan2.2 TI2V-5B (or another Wan model) from Load Diffusion Model; "
                                                "may already carry LoRAs or other patches."),
                types.Modules.Input("modules", tooltip="From Load IM-Animation Modules: the same modules that "
                                                       "Retarget to Identity used."),
            ],
            outputs=[io.Model.Output(display_name="MODEL")],
        )

    @classmethod
    def execute(cls, model, modules) -> io.NodeOutput:
        node = "Apply IM-Animation"
        socket_checks.modules(node, "modules", modules)
        return io.NodeOutput(apply_im_animation(node, model, modules))
