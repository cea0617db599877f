"""im_animation_core.video: decord reader on small clips the tests encode with PyAV."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("decord")
av = pytest.importorskip("av")

from im_animation_core import video  # noqa: E402
from im_animation_core.errors import InputError  # noqa: E402
from im_animation_core.video import probe_video, read_video  # noqa: E402

H, W, N, FPS = 64, 96, 12, 24


def frame_colour(i: int) -> np.ndarray:
    """The solid RGB colour (uint8) of frame i of the test clip: every frame differs."""
    return np.array([10 + 20 * i, 240 - 15 * i, 60 + 10 * (i % 4)], dtype=np.uint8)


def encode(path: Path, frames: list[np.ndarray], fps: int = FPS, faststart: bool = False) -> Path:
    options = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), "w", options=options) as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        stream.options = {"qp": "0", "preset": "ultrafast"}
        for img in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        container.mux(stream.encode())
    return path


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    frames = [np.broadcast_to(frame_colour(i), (H, W, 3)).copy() for i in range(N)]
    return encode(tmp_path_factory.mktemp("video") / "colours.mp4", frames)


@pytest.fixture(scope="module")
def noisy_faststart(tmp_path_factory) -> Path:
    """Random-noise frames (large packets) with the index (moov) at the front, as streamed files have."""
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (H, W, 3), dtype=np.uint8) for _ in range(24)]
    return encode(tmp_path_factory.mktemp("video") / "noise.mp4", frames, faststart=True)


def expected(indices) -> torch.Tensor:
    return torch.tensor(np.stack([frame_colour(int(i)) for i in indices]), dtype=torch.float32) / 255.0


def centre_colours(frames: torch.Tensor) -> torch.Tensor:
    h, w = frames.shape[1:3]
    return frames[:, h // 4 : 3 * h // 4, w // 4 : 3 * w // 4].mean(dim=(1, 2))


def test_probe(clip):
    assert probe_video(clip) == (N, pytest.approx(FPS), H, W)


def test_read_all(clip):
    out = read_video(clip)
    assert out.frames.shape == (N, H, W, 3) and out.frames.dtype == torch.float32
    assert 0.0 <= float(out.frames.min()) and float(out.frames.max()) <= 1.0
    assert out.fps == pytest.approx(FPS) and out.source_fps == pytest.approx(FPS)
    assert out.source_frame_count == N and len(out) == N
    assert out.frame_indices.dtype == torch.int64 and out.frame_indices.tolist() == list(range(N))
    torch.testing.assert_close(centre_colours(out.frames), expected(range(N)), atol=0.03, rtol=0)


def test_stride_start_max_frames(clip):
    out = read_video(clip, stride=3, start=1)
    assert out.frame_indices.tolist() == [1, 4, 7, 10]
    assert out.fps == pytest.approx(FPS / 3)
    torch.testing.assert_close(centre_colours(out.frames), expected([1, 4, 7, 10]), atol=0.03, rtol=0)

    out = read_video(clip, stride=2, max_frames=4)
    assert out.frame_indices.tolist() == [0, 2, 4, 6] and out.frames.shape[0] == 4
    assert out.source_frame_count == N
    torch.testing.assert_close(centre_colours(out.frames), expected([0, 2, 4, 6]), atol=0.03, rtol=0)

    assert read_video(clip, start=N - 1).frame_indices.tolist() == [N - 1]


# (40, 64) is resized by decord; (32, 48), exactly half the source width, trips a decord bug (4-channel
# output) and goes through the torch fallback. Both must give the asked size and the right colours.
@pytest.mark.parametrize("size", [(40, 64), (32, 48), (80, 100)])
def test_resize_on_decode(clip, size):
    out = read_video(clip, stride=4, size=size)
    assert out.frames.shape == (3, *size, 3)
    assert out.frame_indices.tolist() == [0, 4, 8]
    torch.testing.assert_close(centre_colours(out.frames), expected([0, 4, 8]), atol=0.04, rtol=0)


def test_saved_video_frames_are_the_decoded_frames(tmp_path):
    """The scripts score workflow outputs (h264 yuv420p mp4s, as ComfyUI's SaveVideo writes them) read with
    this reader: its frames are exactly what FFmpeg decodes to rgb24, divided by 255."""
    from tools.media import write_video

    path = tmp_path / "saved.mp4"
    write_video(path, torch.rand(9, 48, 80, 3, generator=torch.Generator().manual_seed(0)), fps=12.0)
    with av.open(str(path)) as container:
        decoded = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    out = read_video(path)
    assert out.fps == pytest.approx(12.0)
    assert torch.equal(out.frames, torch.from_numpy(decoded).float() / 255)


def test_bad_arguments(clip):
    for kwargs in ({"stride": 0}, {"start": -1}, {"max_frames": 0}, {"size": (0, 10)}, {"size": 64}):
        with pytest.raises(InputError):
            read_video(clip, **kwargs)
    with pytest.raises(InputError, match=r"past the end.*12 frames"):
        read_video(clip, start=N)


def assert_input_error(path: Path, match: str) -> None:
    with pytest.raises(InputError, match=match) as info:
        read_video(path)
    assert str(path) in str(info.value)
    assert "Traceback" not in str(info.value) and ".cc:" not in str(info.value)


def test_missing_empty_and_folder(tmp_path):
    assert_input_error(tmp_path / "nope.mp4", "does not exist")
    (tmp_path / "empty.mp4").write_bytes(b"")
    assert_input_error(tmp_path / "empty.mp4", "empty")
    assert_input_error(tmp_path, "folder")
    with pytest.raises(InputError, match="empty"):
        probe_video(tmp_path / "empty.mp4")


def test_not_a_video(tmp_path):
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n" * 50)
    assert_input_error(text, "not a video")

    wav = tmp_path / "sound.wav"
    with av.open(str(wav), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        container.mux(stream.encode(frame))
        container.mux(stream.encode())
    assert_input_error(wav, "no video stream")
    with pytest.raises(InputError, match="no video stream"):
        probe_video(wav)


def test_truncated(tmp_path, clip, noisy_faststart):
    # Index at the end (the usual mp4): cut in half, the file has no index and cannot be opened.
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(clip.read_bytes()[: clip.stat().st_size // 2])
    assert_input_error(cut, "truncated or corrupt")
    # Index at the front: the frames it lists are missing.
    cut_fs = tmp_path / "cut_faststart.mp4"
    cut_fs.write_bytes(noisy_faststart.read_bytes()[: noisy_faststart.stat().st_size // 2])
    assert_input_error(cut_fs, "truncated or corrupt")


def test_corrupt_frames(tmp_path, noisy_faststart):
    data = bytearray(noisy_faststart.read_bytes())
    rng = np.random.default_rng(1)
    positions = np.arange(len(data) // 2, len(data), 5)
    data_arr = np.frombuffer(bytes(data), dtype=np.uint8).copy()
    data_arr[positions] = rng.integers(0, 256, positions.size, dtype=np.uint8)
    bad = tmp_path / "garbled.mp4"
    bad.write_bytes(data_arr.tobytes())
    assert_input_error(bad, "truncated or corrupt")
    with pytest.raises(InputError):
        read_video(bad, size=(32, 48))
    # The intact first half still decodes.
    assert read_video(bad, max_frames=2).frames.shape == (2, H, W, 3)


def test_import_without_decord(monkeypatch, clip):
    """Importing the module never needs decord; reading then says how to install it."""
    monkeypatch.setitem(sys.modules, "decord", None)
    module = importlib.reload(video)
    try:
        with pytest.raises(ImportError, match="pip install decord"):
            module.read_video(clip)
    finally:
        monkeypatch.undo()
        importlib.reload(video)
