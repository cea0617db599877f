"""Nodes that read a file by path notice when the file changes: the same prompt run again after the file was
rewritten gives the new file's content, not ComfyUI's cached output of the old one (a cached output node
replays its old result, so the counts below would stay those of the first file)."""

import os

import torch

from im_animation_core.motion import MotionTokens, save_motion_tokens
from tools.media import write_video
from tools.server import assert_ok


def write_tokens(path, frames: int) -> None:
    save_motion_tokens(MotionTokens(tokens=torch.randn(frames, 32, 12), indices=torch.zeros(frames, 32,
                                    dtype=torch.int64), frame_indices=torch.arange(frames), fps=24.0,
                                    source_frame_count=frames), str(path))


def rewrite_later(path, write) -> None:
    """Rewrite the file with a modification time surely different from the old one's, even on file systems
    that keep whole seconds."""
    before = os.stat(path).st_mtime_ns
    write()
    if os.stat(path).st_mtime_ns == before:
        os.utime(path, ns=(before + 2_000_000_000, before + 2_000_000_000))


def test_load_motion_tokens_reads_a_rewritten_file_again(server):
    path = server.base / "output" / "motion_tokens" / "changing_tokens.safetensors"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_tokens(path, 5)
    relative = "motion_tokens/changing_tokens.safetensors"
    prompt = {"1": {"class_type": "IMA_LoadMotionTokens", "inputs": {"path": relative}},
              "2": {"class_type": "IMA_SaveMotionTokens", "inputs": {"motion_tokens": ["1", 0],
                                                                     "filename_prefix": "changing_copy"}}}

    def saved_frames():
        entry = server.run(prompt)
        assert_ok(entry)
        return entry["outputs"]["2"]["motion_tokens"][0]["frames"]

    assert saved_frames() == 5
    rewrite_later(path, lambda: write_tokens(path, 9))
    assert saved_frames() == 9


def test_load_driving_video_reads_a_rewritten_file_again(server):
    path = server.base / "input" / "changing_video.mp4"
    write_video(path, torch.full((3, 32, 32, 3), 0.2))
    prompt = {"1": {"class_type": "IMA_LoadDrivingVideoPath", "inputs": dict(
                  video="", path="changing_video.mp4", start_frame=0, stride=1, max_frames=0, width=0, height=0)},
              "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}}}

    def preview_count():
        entry = server.run(prompt)
        assert_ok(entry)
        return len(entry["outputs"]["2"]["images"])

    assert preview_count() == 3
    rewrite_later(path, lambda: write_video(path, torch.full((5, 32, 32, 3), 0.8)))
    assert preview_count() == 5
