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


def _metadata(path: Path) -> dict | None:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return f.metadata()


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
    from im_animation_core.motion import MotionTokens, save_motion_tokens

    fields = dict(tokens=torch.randn(frames, 32, 12), indices=torch.zeros(frames, 32, dtype=torch.long),
                  frame_indices=torch.arange(frames), fps=24.0, source_frame_count=max(frames, 1))
    fields.update(changes)
    save_motion_tokens(MotionTokens(**fields), str(path))


def black_video(path: Path, frames: int, width: int, height: int) -> None:
    """A few-kilobyte mp4 of black frames that decodes to frames x width x height x 3 bytes (a decoding bomb),
    encoded one frame at a time so that writing it holds one frame."""
    import av
    import numpy as np

    black = np.zeros((height, width, 3), dtype=np.uint8)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=24)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "ultrafast"}
        for _ in range(frames):
            for packet in stream.encode(av.VideoFrame.from_ndarray(black, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def png(path: Path, pixels: torch.Tensor) -> None:
    """pixels: [H,W,3] uint8 -> a PNG file."""
    from PIL import Image

    Image.fromarray(pixels.numpy()).save(path)


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
    names["modules_huge_weights"] = "bad_modules_huge_weights.safetensors"  # finite, absurd: 1e30
    tensors = load_file(str(good_modules))
    tensors["motion_patch.weight"] = torch.full_like(tensors["motion_patch.weight"], 1e30)
    save_file(tensors, str(im / names["modules_huge_weights"]), metadata=_metadata(good_modules))
    names["tokenizer_int8"] = "bad_tokenizer_int8.safetensors"  # a quantised file
    tensors = load_file(str(im / TOKENIZER_NAME))
    tensors = {k: (v * 10).round().clamp(-127, 127).to(torch.int8) if v.is_floating_point() else v
               for k, v in tensors.items()}
    save_file(tensors, str(im / names["tokenizer_int8"]), metadata=_metadata(im / TOKENIZER_NAME))
    names["pickle"] = "bad_pickle.safetensors"
    (im / names["pickle"]).write_bytes(PICKLE)
    names["truncated"] = "bad_truncated.safetensors"
    (im / names["truncated"]).write_bytes(good_modules.read_bytes()[:5000])
    names["dit_nan"] = "bad_dit_nan.safetensors"
    sd = tiny_wan_dit_state_dict()
    sd["head.head.weight"] = sd["head.head.weight"].clone().fill_(float("nan"))
    save_file(sd, str(models / "diffusion_models" / names["dit_nan"]))
    names["dit_explode"] = "bad_dit_explode.safetensors"  # finite weights whose output is 1e8 times too large
    sd = tiny_wan_dit_state_dict()
    sd["head.head.weight"] = sd["head.head.weight"] * 1e8
    save_file(sd, str(models / "diffusion_models" / names["dit_explode"]))
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
    names["video_bomb"] = "video_bomb.mp4"
    black_video(inp / names["video_bomb"], 8, 4096, 4096)
    names["video_2x2"] = "video_2x2.mp4"
    write_video(inp / names["video_2x2"], driving[:5, :2, :2])
    names["image_1x1"] = "image_1x1.png"
    png(inp / names["image_1x1"], torch.full((1, 1, 3), 128, dtype=torch.uint8))
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


def with_tokenizer_record(src: Path, dst: Path, record: str | None) -> None:
    """A copy of a modules file (tensors unchanged) whose 'motion_tokenizer' record is ``record`` (JSON text; None
    drops it, as in files written before modules files recorded their tokenizer)."""
    meta = dict(_metadata(src))
    meta.pop("motion_tokenizer", None)
    if record is not None:
        meta["motion_tokenizer"] = record
    save_file(load_file(str(src)), str(dst), metadata=meta)


def write_mismatched_parts(base: Path) -> dict[str, str]:
    """Model files that do not belong together, under a server's models/im_animation/. Returns file names by key:
    other_tokenizer       a motion tokenizer from another model set of the fixture set's sizes (width 64,
                          codebook 256) with other weights
    demo_modules          the committed demo modules' tensors, recording the committed demo tokenizer (width 128,
                          codebook 1024) as the trainer now records it
    demo_tokenizer        a copy of the committed demo tokenizer
    unrecorded_modules    the fixture modules without a record, like files written before the record
    bad_record_modules    the fixture modules with a record that is not one
    The committed files are only read."""
    import shutil

    from im_animation_core.motion import TokenizerRecord

    from .demo_set import SOURCES
    from .fixture_models import tiny_motion_tokenizer

    im = base / "models" / "im_animation"
    names = {"other_tokenizer": "other_set_motion_tokenizer.safetensors",
             "demo_modules": "demo_modules_recorded.safetensors",
             "demo_tokenizer": "demo_motion_tokenizer_copy.safetensors",
             "unrecorded_modules": "unrecorded_modules.safetensors",
             "bad_record_modules": "bad_record_modules.safetensors"}
    tiny_motion_tokenizer(seed=7).save(str(im / names["other_tokenizer"]))
    shutil.copyfile(SOURCES["tokenizer"], im / names["demo_tokenizer"])
    with_tokenizer_record(SOURCES["modules"], im / names["demo_modules"],
                          TokenizerRecord.of_file(SOURCES["tokenizer"]).to_json())
    with_tokenizer_record(im / MODULES_NAME, im / names["unrecorded_modules"], None)
    record = json.loads(_metadata(im / MODULES_NAME)["motion_tokenizer"])
    with_tokenizer_record(im / MODULES_NAME, im / names["bad_record_modules"],
                          json.dumps(dict(record, sha256="not a digest", name="../" * 40 + "x")))
    return names
