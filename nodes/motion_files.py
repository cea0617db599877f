"""Save Motion Tokens / Load Motion Tokens: encode a driving video once, reuse its tokens."""

import os

import folder_paths
from comfy_api.latest import io

from ..im_animation_core.motion import load_motion_tokens, save_motion_tokens
from . import socket_checks, types
from .allowed_folders import file_fingerprint, readable_file
from .errors import user_errors

SUBFOLDER = "motion_tokens"
DEFAULT_PREFIX = "motion"
# A file name part stays under common file-system limits (255 bytes) with "_00001.safetensors" appended.
MAX_NAME_BYTES = 200


def checked_prefix(node: str, prefix: str, default: str = DEFAULT_PREFIX, inside: str = f"output/{SUBFOLDER}/",
                   max_name_bytes: int = MAX_NAME_BYTES) -> str:
    """The prefix a save node writes under: ``default`` when empty; refused (naming ``node`` and the folder
    ``inside``) when it cannot make a file inside that folder. Shared by every save node of the pack."""
    prefix = (prefix or "").strip()
    if not prefix:
        return default
    if "\x00" in prefix:
        raise ValueError(f"{node}: filename_prefix contains a NUL character; use letters, digits, '-' and '_'.")
    norm = os.path.normpath(prefix)
    if os.path.isabs(prefix) or norm == ".." or norm.startswith(".." + os.sep) or prefix.endswith(("/", "\\")):
        raise ValueError(f"{node}: filename_prefix '{prefix[:80]}' must be a file name (optionally under "
                         f"sub-folders) inside {inside}, not a folder or a path outside it.")
    if any(len(part.encode()) > max_name_bytes for part in norm.split(os.sep)) or len(prefix) > 1000:
        raise ValueError(f"{node}: filename_prefix is too long (at most {max_name_bytes} bytes per name); "
                         "shorten it.")
    return prefix


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
                io.String.Input("filename_prefix", default=DEFAULT_PREFIX,
                                tooltip="File name prefix; a counter is appended. Empty: 'motion'."),
            ],
            outputs=[],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, motion_tokens, filename_prefix) -> io.NodeOutput:
        node = "Save Motion Tokens"
        socket_checks.motion_tokens(node, "motion_tokens", motion_tokens)
        prefix = checked_prefix(node, filename_prefix)
        out_dir = os.path.join(folder_paths.get_output_directory(), SUBFOLDER)
        os.makedirs(out_dir, exist_ok=True)
        full, name, counter, subfolder, _ = folder_paths.get_save_image_path(prefix, out_dir)
        filename = f"{name}_{counter:05}.safetensors"
        try:
            os.makedirs(full, exist_ok=True)
            save_motion_tokens(motion_tokens, os.path.join(full, filename))
        except OSError as e:
            raise ValueError(f"{node}: cannot write output/{SUBFOLDER}/{os.path.join(subfolder, filename)} "
                             f"({e.strerror or e}); choose another filename_prefix or free disk space.") from None
        return io.NodeOutput(ui={"motion_tokens": [{"filename": filename, "subfolder": os.path.join(
            SUBFOLDER, subfolder).rstrip("/"), "type": "output", "frames": len(motion_tokens)}]})


def full_path(path: str) -> str:
    """The real path of the tokens file ``path`` names (relative to the output folder); InputError outside the
    allowed folders."""
    return readable_file((path or "").strip(), folder_paths.get_output_directory(), "Motion tokens file")


class LoadMotionTokens(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            **types.ALIASES,
            node_id="IMA_LoadMotionTokens",
            display_name="Load Motion Tokens",
            category=types.CATEGORY,
            description="Loads motion tokens saved by Save Motion Tokens: a path relative to the output folder, "
                        "or an absolute path inside ComfyUI's input, output or temp folder.",
            inputs=[io.String.Input("path", default="motion_tokens/motion_00001.safetensors",
                                    tooltip="File written by Save Motion Tokens: relative to ComfyUI's output "
                                            "folder, or absolute inside the input, output or temp folder (or a "
                                            "folder the server's owner allowed, docs/security.md).")],
            outputs=[types.MotionTokens.Output(display_name="motion_tokens")],
        )

    @classmethod
    def fingerprint_inputs(cls, path):
        # The path alone would let ComfyUI serve the cached tokens after the file was rewritten.
        return file_fingerprint(lambda: full_path(path))

    @classmethod
    def execute(cls, path) -> io.NodeOutput:
        with user_errors("Load Motion Tokens"):
            return io.NodeOutput(load_motion_tokens(full_path(path)))
