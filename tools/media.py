"""Demo and test inputs made by code: an identity image and a driving clip of synthetic characters."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import torch
from PIL import Image

IDENTITY_NAME = "ima_demo_identity.png"
DRIVING_NAME = "ima_demo_driving.mp4"
LONG_DRIVING_NAME = "ima_demo_driving_49.mp4"  # the long-clip workflow's driving video
LONG_FRAMES = 49


def write_video(path, frames: torch.Tensor, fps: float = 24.0) -> None:
    """frames: [T,H,W,3] float in [0,1] -> an mp4 file (h264 when available, else mpeg4)."""
    arr = (frames.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    with av.open(str(path), mode="w") as container:
        try:
            stream = container.add_stream("libx264", rate=int(round(fps)))
        except Exception:  # noqa: BLE001 - codec availability depends on the PyAV build
            stream = container.add_stream("mpeg4", rate=int(round(fps)))
        stream.width, stream.height, stream.pix_fmt = arr.shape[2], arr.shape[1], "yuv420p"
        if stream.codec_context.name == "libx264":
            stream.options = {"crf": "12"}
        for frame in arr:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def read_video_info(path) -> tuple[int, int, int]:
    """(frame count, width, height) by decoding every frame."""
    with av.open(str(path)) as container:
        frames = list(container.decode(video=0))
    return len(frames), frames[0].width, frames[0].height


def demo_clips(frames: int = 17, size: tuple[int, int] = (128, 128)):
    """(identity image [1,H,W,3], driving frames [T,H,W,3]): a tall thin character and a short wide one."""
    from im_animation_core.synthetic import Identity, Motion, render_clip

    w, h = size
    identity = Identity(torso=0.3, upper_arm=0.16, forearm=0.15, thigh=0.2, shin=0.19, thickness=0.02,
                        scale=0.85, center_x=0.42, pelvis_y=0.5, body_color=(0.2, 0.7, 0.3),
                        background=(0.25, 0.22, 0.2))
    driver = Identity(torso=0.2, thigh=0.13, shin=0.13, thickness=0.035, scale=1.0, center_x=0.55,
                      pelvis_y=0.6)
    still = Motion(arm_swing=0.0, leg_swing=0.0, torso_sway=0.0)
    return render_clip(identity, still, 1, h, w), render_clip(driver, Motion(period=16), frames, h, w)


def write_demo_inputs(input_dir, frames: int = 17, size: tuple[int, int] = (128, 128)) -> tuple[str, str]:
    """Write the identity PNG, the driving mp4 and the long-clip workflow's LONG_FRAMES-frame driving mp4 into
    ComfyUI's input folder; returns the first two's names."""
    input_dir = Path(input_dir)
    input_dir.mkdir(parents=True, exist_ok=True)
    identity, driving = demo_clips(frames, size)
    Image.fromarray((identity[0].numpy() * 255).round().astype(np.uint8)).save(input_dir / IDENTITY_NAME)
    write_video(input_dir / DRIVING_NAME, driving)
    write_video(input_dir / LONG_DRIVING_NAME, demo_clips(LONG_FRAMES, size)[1])
    return IDENTITY_NAME, DRIVING_NAME
