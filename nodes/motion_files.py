"""Save Motion Tokens / Load Motion Tokens: encode a driving video once, reuse its tokens."""

import os
import re

import folder_paths
from comfy_api.latest import io
from safetensors import SafetensorError

from ..im_animation_core.motion import load_motion_tokens, save_motion_tokens
from . import socket_checks, types
from .allowed_folders import file_fingerprint, readable_file
from .errors import user_errors

SUBFOLDER = "motion_tokens"
DEFAULT_PREFIX = "motion"
# A file name part stays under common file-system limits (255 bytes) with "_00001.safetensors" appended.
MAX_NAME_BYTES = 200
# Sub-folders a prefix may name: enough to sort outputs, not a tree that a prompt can grow without end.
MAX_FOLDER_DEPTH = 8


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
    parts = prefix.replace("\\", "/").split("/")
    # "." and ".." parts are refused even where they stay inside ("sub/.." would write the hidden "._00001"
    # files beside the folder): a prefix names a file, relative to the folder, without detours.
    if os.path.isabs(prefix) or prefix.endswith(("/", "\\")) or any(part in (".", "..") for part in parts):
        raise ValueError(f"{node}: filename_prefix '{prefix[:80]}' must be a file name (optionally under "
                         f"sub-folders) inside {inside}, not a folder, a '.' or '..' part, or a path outside it.")
    if len(parts) - 1 > MAX_FOLDER_DEPTH:
        raise ValueError(f"{node}: filename_prefix names {len(parts) - 1} nested folders; at most "
                         f"{MAX_FOLDER_DEPTH} are allowed. Use a shorter prefix.")
    if any(len(part.encode()) > max_name_bytes for part in norm.split(os.sep)) or len(prefix) > 1000:
        raise ValueError(f"{node}: filename_prefix is too long (at most {max_name_bytes} bytes per name); "
                         "shorten it.")
    return prefix


# What a failed write raises: the OS's errors, and safetensors' own (it reports a full disk as
# "Error while serializing: I/O error: File too large (os error 27)").
WRITE_ERRORS = (OSError, SafetensorError)


def cannot_write(node: str, shown: str, error: Exception) -> str:
    """The message for a failed save: the file relative to the output folder and the system's reason, never
    the server's absolute path (an OSError's own text holds it)."""
    if isinstance(error, OSError):
        reason = error.strerror or type(error).__name__
    else:
        reason = re.sub(r"\s*\(os error \d+\)", "", str(error).rpartition("I/O error:")[2]).strip()[:120]
    return (f"{node}: cannot write {shown} ({reason}): a file may stand where a folder of filename_prefix should "
            "be, the folder may be read-only or the disk full. Choose another filename_prefix or free disk space.")


def write_whole(path: str, write) -> None:
    """``write(tmp)`` writes the file under a hidden temporary name beside ``path``, renamed to ``path`` once
    whole: a failed write (disk full, read-only folder) leaves no partial file, and its OSError is raised."""
    folder, name = os.path.split(path)
    tmp = os.path.join(folder, f".{name}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


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
        shown = f"output/{SUBFOLDER}/{prefix}"
        try:
            os.makedirs(out_dir, exist_ok=True)
            full, name, counter, subfolder, _ = folder_paths.get_save_image_path(prefix, out_dir)
            filename = f"{name}_{counter:05}.safetensors"
            shown = f"output/{SUBFOLDER}/{os.path.join(subfolder, filename)}"
            os.makedirs(full, exist_ok=True)
            write_whole(os.path.join(full, filename), lambda tmp: save_motion_tokens(motion_tokens, tmp))
        except WRITE_ERRORS as e:
            raise ValueError(cannot_write(node, shown, e)) from None
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
