"""IM-Animation for ComfyUI: animate a character image with the motion and expressions of a driving video.

ComfyUI imports this file and calls ``comfy_entrypoint()`` (V3 node API)."""

from comfy_api.latest import ComfyExtension, io
from typing_extensions import override

from .nodes import NODES, model_files

model_files.register()


class IMAnimationExtension(ComfyExtension):
    @override
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return list(NODES)


async def comfy_entrypoint() -> IMAnimationExtension:
    return IMAnimationExtension()
