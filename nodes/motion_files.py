"""Save Motion Tokens / Load Motion Tokens: encode a driving video once, reuse its tokens."""

import os

import folder_paths
from comfy_api.latest import io

from ..im_animation_core.motion import load_motion_tokens, save_motion_tokens
from . import types
from .errors import user_errors

SUBFOLDER = "motion_tokens"


class SaveMotionTokens(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            **types.ALIASES,
            node_id="IMA_SaveMotionTokens",
            display_name="Save Motion Tokens",
            category=types.CATEGORY,
            description="Saves motion tokens as a .safetensors file under output/motion_tokens/, so a driving "
                        "video is encoded once and reused with Load Motion Tokens.",
            inputs=[
                types.MotionTokens.Input("motion_tokens", tooltip="From Encode Driving Video."),
                io.String.Input("filename_prefix", default="motion",
                                tooltip="File name prefix; a counter is appended."),
            ],
            outputs=[],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, motion_tokens, filename_prefix) -> io.NodeOutput:
        out_dir = os.path.join(folder_paths.get_output_directory(), SUBFOLDER)
        full, name, counter, subfolder, _ = folder_paths.get_save_image_path(filename_prefix, out_dir)
        filename = f"{name}_{counter:05}.safetensors"
        save_motion_tokens(motion_tokens, os.path.join(full, filename))
        return io.NodeOutput(ui={"motion_tokens": [{"filename": filename, "subfolder": os.path.join(
            SUBFOLDER, subfolder).rstrip("/"), "type": "output", "frames": len(motion_tokens)}]})


class LoadMotionTokens(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            **types.ALIASES,
            node_id="IMA_LoadMotionTokens",
            display_name="Load Motion Tokens",
            category=types.CATEGORY,
            description="Loads motion tokens saved by Save Motion Tokens (a path relative to the output folder, "
                        "or an absolute path).",
            inputs=[io.String.Input("path", default="motion_tokens/motion_00001.safetensors",
                                    tooltip="File written by Save Motion Tokens: relative to ComfyUI's output "
                                            "folder, or absolute.")],
            outputs=[types.MotionTokens.Output(display_name="motion_tokens")],
        )

    @classmethod
    def execute(cls, path) -> io.NodeOutput:
        full = path if os.path.isabs(path) else os.path.join(folder_paths.get_output_directory(), path)
        with user_errors("Load Motion Tokens"):
            return io.NodeOutput(load_motion_tokens(full))
