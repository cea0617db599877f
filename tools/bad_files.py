"""Damaged, hostile and edge-case files for the bad-input tests, written by code into a server's folders."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .fixture_models import DIT_NAME, MODULES_NAME, TOKENIZER_NAME, tiny_wan_dit_state_dict
from .media import demo_clips, write_video

PICKLE = b"\x80\x04\x95" + b"\x00" * 64  # the start of a pickle protocol-4 stream


def modules_with_metadata(src: Path, dst: Path, **records) -> None:
    """A copy of a modules file with some fields of its JSON size records replaced (the tensors unchanged)."""
    from safetensors import safe_open

    with safe_open(str(src), framework="pt") as f:
        meta = dict(f.metadata())
    for key, fields in records.items():
        meta[key] = json.dumps(dict(json.loads(meta[key]), **fields))
    save_file(load_file(str(src)), str(dst), metadata=meta)


def with_nan(src: Path, dst: Path, tensor: str | None = None, metadata: dict | None = None) -> None:
    """A copy of a safetensors file with one NaN in ``tensor`` (default: its first floating tensor)."""
    from safetensors import safe_open

    with safe_open(str(src), framework="pt") as f:
        meta = f.metadata()
    tensors = load_file(str(src))
    name = tensor or next(k for k, v in tensors.items() if v.is_floating_point() and v.numel() > 1)
    tensors[name] = tensors[name].clone()
    tensors[name].view(-1)[0] = float("nan")
    save_file(tensors, str(dst), metadata=metadata if metadata is not None else meta)


def tokens_file(path: Path, frames: int = 5, **changes) -> None:
    import sys

    from .comfy_path import REPO

    sys.path.insert(0, str(REPO))
    from im_animation_core.motion import MotionTokens, save_motion_tokens

    fields = dict(tokens=torch.randn(frames, 32, 12), indices=torch.zeros(frames, 32, dtype=torch.long),
                  frame_indices=torch.arange(frames), fps=24.0, source_frame_count=max(frames, 1))
    fields.update(changes)
    save_motion_tokens(MotionTokens(**fields), str(path))


def write_bad_files(base: Path, outside: Path) -> dict[str, str]:
    """Bad model, tokens and video files under a server's base folder, and a 'secret' outside it.
    Returns names (relative to the folder each node reads) and absolute paths by key."""
    models, out, inp = base / "models", base / "output", base / "input"
    im = models / "im_animation"
    good_modules = im / MODULES_NAME
    names = {}

    def modules(key, **records):
        names[key] = f"bad_{key}.safetensors"
        modules_with_metadata(good_modules, im / names[key], **records)

    modules("huge", retarget={"width": 2048, "depth": 16})
    modules("wide", retarget={"width": 200000})
    modules("negative", retarget={"width": -128})
    modules("heads", retarget={"heads": 3})
    modules("kind", retarget={"heatmap_head": "fancy"})
    names["modules_nan"] = "bad_modules_nan.safetensors"
    with_nan(good_modules, im / names["modules_nan"], "motion_patch.weight")
    names["tokenizer_nan"] = "bad_tokenizer_nan.safetensors"
    with_nan(im / TOKENIZER_NAME, im / names["tokenizer_nan"])
    names["pickle"] = "bad_pickle.safetensors"
    (im / names["pickle"]).write_bytes(PICKLE)
    names["truncated"] = "bad_truncated.safetensors"
    (im / names["truncated"]).write_bytes(good_modules.read_bytes()[:5000])
    names["dit_nan"] = "bad_dit_nan.safetensors"
    sd = tiny_wan_dit_state_dict()
    sd["head.head.weight"] = sd["head.head.weight"].clone().fill_(float("nan"))
    save_file(sd, str(models / "diffusion_models" / names["dit_nan"]))
    assert (models / "diffusion_models" / DIT_NAME).exists()

    (out / "motion_tokens").mkdir(parents=True, exist_ok=True)
    for key, frames, changes in (("tokens_nan", 5, {"tokens": torch.full((5, 32, 12), float("nan"))}),
                                 ("tokens_empty", 0, {}),
                                 ("tokens_range", 5, {"frame_indices": torch.tensor([0, 1, 2, 3, 40])}),
                                 ("tokens_good", 5, {})):
        names[key] = f"motion_tokens/{key}.safetensors"
        tokens_file(out / names[key], frames, **changes)
    names["tokens_truncated"] = "motion_tokens/tokens_truncated.safetensors"
    (out / names["tokens_truncated"]).write_bytes((out / names["tokens_good"]).read_bytes()[:300])
    names["tokens_other"] = "motion_tokens/not_tokens.safetensors"
    (out / names["tokens_other"]).write_bytes(good_modules.read_bytes())

    _, driving = demo_clips(17, (64, 64))
    for key, frames in (("video_one", 1), ("video_two", 2)):
        names[key] = f"{key}.mp4"
        write_video(inp / names[key], driving[:frames])
    names["video_empty"] = "video_empty.mp4"
    (inp / names["video_empty"]).write_bytes(b"")
    names["video_junk"] = "video_junk.mp4"
    (inp / names["video_junk"]).write_bytes(b"not a video at all" * 100)

    outside.mkdir(parents=True, exist_ok=True)
    write_video(outside / "secret.mp4", driving[:5])
    tokens_file(outside / "secret_tokens.safetensors")
    names["outside_video"] = str(outside / "secret.mp4")
    names["outside_tokens"] = str(outside / "secret_tokens.safetensors")
    names["link_video"] = "link_to_secret.mp4"
    (inp / names["link_video"]).symlink_to(outside / "secret.mp4")
    names["link_tokens"] = "motion_tokens/link_to_secret.safetensors"
    (out / names["link_tokens"]).symlink_to(outside / "secret_tokens.safetensors")
    return names
