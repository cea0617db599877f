"""Where the pack's weights live: models/im_animation/, registered with folder_paths so that
extra_model_paths.yaml can add more folders under the key ``im_animation``."""

import os

import folder_paths

FOLDER = "im_animation"
EXTENSIONS = {".safetensors"}


def register() -> None:
    default = os.path.join(folder_paths.models_dir, FOLDER)
    paths, exts = folder_paths.folder_names_and_paths.get(FOLDER, ([], set()))
    if default not in paths:
        paths.insert(0, default)
    folder_paths.folder_names_and_paths[FOLDER] = (paths, set(exts) | EXTENSIONS)


def file_list() -> list[str]:
    return folder_paths.get_filename_list(FOLDER)


def full_path(node: str, name: str) -> str:
    path = folder_paths.get_full_path(FOLDER, name)
    if path is None or not os.path.isfile(path):
        raise ValueError(f"{node}: model file '{name}' was not found in models/{FOLDER}/. Put the file there "
                         "(or in a folder listed under 'im_animation' in extra_model_paths.yaml) and refresh.")
    return path
