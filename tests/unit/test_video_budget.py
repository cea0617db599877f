"""im_animation_core.video's decoding budget: refused before decoding, raised by IMA_MAX_DECODE_PIXELS, and
tiny frames that decord cannot copy out read through PyAV."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("decord")
pytest.importorskip("av")

from im_animation_core import video  # noqa: E402
from im_animation_core.errors import InputError  # noqa: E402
from tools.media import write_video  # noqa: E402

FRAMES, H, W = 9, 32, 48


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    path = tmp_path_factory.mktemp("budget") / "clip.mp4"
    write_video(path, torch.rand(FRAMES, H, W, 3))
    return path


def test_a_read_over_the_budget_is_refused_before_decoding(clip, monkeypatch):
    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded although over the budget")

    monkeypatch.setattr(video, "_decode_into", no_decoding)
    with pytest.raises(InputError) as e:
        video.read_video(clip, name="shown.mp4", max_pixels=FRAMES * H * W - 1)
    message = str(e.value)
    assert "'shown.mp4'" in message and f"{FRAMES} frames of {W}x{H}" in message
    assert str(clip) not in message and video.MAX_DECODE_PIXELS_ENV in message


def test_the_budget_counts_the_output_size(clip):
    out = video.read_video(clip, size=(16, 16), max_pixels=FRAMES * 16 * 16)
    assert out.frames.shape == (FRAMES, 16, 16, 3)
    assert len(video.read_video(clip, max_pixels=FRAMES * H * W)) == FRAMES
    with pytest.raises(InputError, match="frames of 48x32 pixels, more than"):
        video.read_video(clip, size=(8, 8), max_pixels=H * W - 1)  # each source frame is decoded whole


def test_the_environment_variable_sets_the_budget(clip, monkeypatch):
    monkeypatch.setenv(video.MAX_DECODE_PIXELS_ENV, str(FRAMES * H * W - 1))
    with pytest.raises(InputError, match="over the decoding limit"):
        video.read_video(clip)
    monkeypatch.setenv(video.MAX_DECODE_PIXELS_ENV, "1_000_000")
    assert video.max_decode_pixels() == 1_000_000 and len(video.read_video(clip)) == FRAMES
    monkeypatch.setenv(video.MAX_DECODE_PIXELS_ENV, "lots")
    with pytest.raises(InputError, match="IMA_MAX_DECODE_PIXELS = 'lots' is not a whole number"):
        video.read_video(clip)
    monkeypatch.delenv(video.MAX_DECODE_PIXELS_ENV)
    assert video.max_decode_pixels() == video.DEFAULT_MAX_DECODE_PIXELS


@pytest.mark.parametrize("h, w", [(2, 2), (4, 6)])
def test_frames_a_few_pixels_wide_are_read(tmp_path, h, w):
    levels = torch.tensor([0.1, 0.3, 0.5, 0.7, 0.9])  # grey frames: yuv420p keeps them on frames this small
    write_video(tmp_path / "tiny.mp4", levels.view(5, 1, 1, 1).expand(5, h, w, 3))
    out = video.read_video(tmp_path / "tiny.mp4", stride=2)
    assert out.frames.shape == (3, h, w, 3)
    assert out.frame_indices.tolist() == [0, 2, 4]
    assert torch.allclose(out.frames.mean(dim=(1, 2, 3)), levels[::2], atol=0.03)  # these frames, in this order
