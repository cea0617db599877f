"""preprocess_frames: [N,H,W,3] IMAGE -> [N,3,256,256], symmetric zero pad to square, bilinear resize."""

import pytest
import torch
import torch.nn.functional as F

import im_animation_core.tokenizer.preprocess as preprocess_module
from im_animation_core import preprocess_frames
from im_animation_core.errors import InputError
from im_animation_core.tokenizer.preprocess import pad_amounts


def manual(frames: torch.Tensor, left: int, right: int, top: int, bottom: int) -> torch.Tensor:
    x = frames.permute(0, 3, 1, 2)
    x = F.pad(x, (left, right, top, bottom))
    return F.interpolate(x, size=(256, 256), mode="bilinear", align_corners=False)


def test_square_256_is_a_layout_change_only():
    frames = torch.rand(2, 256, 256, 3)
    out = preprocess_frames(frames)
    assert out.shape == (2, 3, 256, 256) and out.dtype == torch.float32
    assert torch.equal(out, frames.permute(0, 3, 1, 2))


def test_square_resize_is_bilinear_without_antialias():
    frames = torch.rand(1, 512, 512, 3)
    torch.testing.assert_close(preprocess_frames(frames), manual(frames, 0, 0, 0, 0), rtol=0, atol=0)


def test_portrait_pads_width_symmetrically():
    frames = torch.rand(2, 320, 200, 3)
    assert pad_amounts(320, 200) == (60, 60, 0, 0)
    out = preprocess_frames(frames)
    torch.testing.assert_close(out, manual(frames, 60, 60, 0, 0), rtol=0, atol=0)
    # side bands are black: 60 of 320 px -> 48 of 256 px on each side (minus the bilinear edge pixel)
    assert out[..., :47].abs().max() == 0 and out[..., -47:].abs().max() == 0
    assert out[..., 50:-50].min() > 0


def test_landscape_pads_height_symmetrically():
    frames = torch.ones(1, 180, 320, 3)  # symmetric content
    out = preprocess_frames(frames)
    assert pad_amounts(180, 320) == (0, 0, 70, 70)
    torch.testing.assert_close(out, manual(frames, 0, 0, 70, 70), rtol=0, atol=0)
    torch.testing.assert_close(out, out.flip(-2))  # top band == bottom band
    assert out[:, :, :55].abs().max() == 0 and out[:, :, 60:190].min() == 1


def test_odd_difference_puts_the_extra_pixel_after():
    assert pad_amounts(101, 100) == (0, 1, 0, 0)
    frames = torch.rand(1, 101, 100, 3)
    torch.testing.assert_close(preprocess_frames(frames), manual(frames, 0, 1, 0, 0), rtol=0, atol=0)


def test_sub_batches_give_the_same_result(monkeypatch):
    frames = torch.rand(5, 90, 60, 3)
    whole = preprocess_frames(frames)
    monkeypatch.setattr(preprocess_module, "PAD_BUDGET_BYTES", 1)
    assert torch.equal(preprocess_frames(frames), whole)


@pytest.mark.parametrize("frames,match", [
    (torch.rand(0, 64, 64, 3), "empty"),
    (torch.rand(2, 64, 64, 4), "alpha"),
    (torch.rand(2, 64, 64, 1), "3 channels"),
    (torch.rand(2, 3, 64, 64), "3 channels"),
    (torch.rand(64, 64, 3), r"\[N,H,W,3\]"),
    (torch.full((1, 8, 8, 3), float("nan")), "NaN"),
    (torch.full((1, 8, 8, 3), float("inf")), "NaN or infinite"),
    (torch.zeros(1, 8, 8, 3, dtype=torch.uint8), "float"),
    (torch.full((1, 8, 8, 3), 255.0), "0-255"),
])
def test_bad_frames_are_rejected_clearly(frames, match):
    with pytest.raises(InputError, match=match):
        preprocess_frames(frames)


def test_nan_in_a_later_frame_is_found():
    frames = torch.rand(4, 16, 16, 3)
    frames[3, 5, 5, 1] = float("nan")
    with pytest.raises(InputError, match="NaN"):
        preprocess_frames(frames)
