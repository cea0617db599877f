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


# safetensors header dtypes of floating-point tensors: the only kind a weights file of this pack holds.
FLOAT_DTYPES = {"F16", "BF16", "F32", "F64"}


def check_float_weights(node: str, name: str, path: str) -> None:
    """Refuse a weights file holding integer or other non-float tensors (a quantised or foreign file), from its
    header, before the loader fails deep inside torch ("Only Tensors of floating point ... can require
    gradients"). An unreadable header is left for the loader to report."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(path, framework="pt") as f:
            bad = sorted((k, f.get_slice(k).get_dtype()) for k in f.keys()
                         if f.get_slice(k).get_dtype() not in FLOAT_DTYPES)
    except (SafetensorError, OSError, ValueError):
        return
    if bad:
        shown = ", ".join(f"{k} ({d})" for k, d in bad[:4]) + (f" and {len(bad) - 4} more" if len(bad) > 4 else "")
        raise ValueError(f"{node}: '{name}' holds non-float weights: {shown}. This pack loads float16, bfloat16 or "
                         "float32 weights only (not quantised files): use the original file.")
