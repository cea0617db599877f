"""The folders that file-reading nodes may read: ComfyUI's input, output and temp folders, plus folders the
server's owner allows explicitly (docs/security.md). Paths are confined by im_animation_core.paths."""

import os

import folder_paths

from ..im_animation_core import paths
from ..im_animation_core.errors import InputError
from ..im_animation_core.paths import confine

# extra_model_paths.yaml key whose folders the file-reading nodes may also read.
EXTRA_KEY = "im_animation_inputs"
# Environment variable: more readable folders, separated by os.pathsep (":" on Linux and macOS, ";" on Windows).
ENV_VAR = "IMA_ALLOWED_DIRS"
NAMES = "ComfyUI's input, output and temp folders, and folders allowed by the server's owner"


def allowed_folders() -> list[str]:
    folders = [folder_paths.get_input_directory(), folder_paths.get_output_directory(),
               folder_paths.get_temp_directory()]
    folders += folder_paths.folder_names_and_paths.get(EXTRA_KEY, ([], set()))[0]
    folders += [p for p in os.environ.get(ENV_VAR, "").split(os.pathsep) if p.strip()]
    return folders


def shown_name(real: str) -> str:
    """How messages name the file at ``real`` (a path readable_file returned): relative to the allowed folder
    that holds it, annotated as ComfyUI's pickers do for the output and temp folders, so that an error never
    shows the server's own folder layout."""
    labels = {folder_paths.get_output_directory(): " [output]", folder_paths.get_temp_directory(): " [temp]"}
    return paths.shown_name(real, [(folder, labels.get(folder, "")) for folder in allowed_folders()])


def readable_file(given: str, base: str, what: str) -> str:
    """The real path of ``given`` (relative to ``base``) when it is a readable file in an allowed folder; else
    InputError with one message whatever the reason (see im_animation_core.paths)."""
    return confine(given, base, allowed_folders(), what, NAMES)


def file_fingerprint(resolve) -> str:
    """What a file-reading node gives ComfyUI as fingerprint_inputs: the real path of the file ``resolve()``
    returns, its modification time and its size, so that a file rewritten under the same name (a re-upload,
    a new save) is read again instead of served from the cache; "unreadable" when resolve() refuses the
    path or the file cannot be read, which execute() then reports."""
    try:
        real = resolve()
        stat = os.stat(real)
        return f"{real}:{stat.st_mtime_ns}:{stat.st_size}"
    except (InputError, OSError):
        return "unreadable"
