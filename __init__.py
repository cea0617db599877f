"""IM-Animation for ComfyUI: animate a character image with the motion and expressions of a driving video.

ComfyUI imports this file and calls ``comfy_entrypoint()`` (V3 node API)."""

from typing_extensions import override

from comfy_api.latest import ComfyExtension, io

from .nodes import NODES
from .nodes import model_files

model_files.register()


class IMAnimationExtension(ComfyExtension):
    @override
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return list(NODES)


async def comfy_entrypoint() -> IMAnimationExtension:
    return IMAnimationExtension()
