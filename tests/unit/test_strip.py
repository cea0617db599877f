import pytest
import torch

from im_animation_core.eval.strip import BACKGROUND, contact_sheet, frame_indices, side_by_side, to_uint8_frames

pytestmark = pytest.mark.usefixtures("one_thread")

H, W = 6, 8
# Exact uint8 values (k / 255), so float -> uint8 is unambiguous.
RED, GREEN, BLUE, GREY = (255, 0, 0), (0, 255, 0), (0, 0, 255), (51, 102, 153)


def solid(color, frames: int | None = 4, h: int = H, w: int = W) -> torch.Tensor:
    """A float clip [T,H,W,3] (or an image [H,W,3] with frames=None) of one colour."""
    c = torch.tensor(color, dtype=torch.float32) / 255
    return c.expand(h, w, 3).clone() if frames is None else c.expand(frames, h, w, 3).clone()


def ramp(frames: int) -> torch.Tensor:
    """A grey clip whose value is 10 * t / 255 at frame t: tells frames apart."""
    return torch.stack([torch.full((H, W, 3), 10.0 * t / 255) for t in range(frames)])


def region(out: torch.Tensor, y0: int, y1: int, x0: int, x1: int) -> torch.Tensor:
    return out[..., y0:y1, x0:x1, :].reshape(-1, 3)


def test_panels_are_placed_side_by_side_upscaled_with_gaps_and_labels():
    scale, gap, lh = 3, 4, 14
    panels = [solid(RED), solid(GREEN, frames=None), solid(BLUE), solid(GREY)]
    out = side_by_side(panels, ["driving", "identity", "result", "ground truth"], scale=scale, gap=gap,
                       label_height=lh)
    pw, ph = W * scale, H * scale
    assert out.dtype == torch.uint8 and out.shape == (4, lh + ph, 4 * pw + 3 * gap, 3)
    bg = torch.tensor(BACKGROUND, dtype=torch.uint8)
    for k, color in enumerate((RED, GREEN, BLUE, GREY)):
        x0 = k * (pw + gap)
        # Every pixel of panel k, in every frame, is its colour (the still image repeats in all frames).
        assert (region(out, lh, lh + ph, x0, x0 + pw) == torch.tensor(color, dtype=torch.uint8)).all()
        if k < 3:  # the gap after it is background
            assert (region(out, lh, lh + ph, x0 + pw, x0 + pw + gap) == bg).all()
        # The label is drawn above its own panel: some bright text pixels there, the same in every frame.
        above = out[:, :lh, x0:x0 + pw]
        assert (above.int().sum(-1) > 3 * 120).any()
        assert (above == above[:1]).all()
    # Label pixels are never the panel colours: the text row is separate from the frames.
    assert not (out[:, :lh] == torch.tensor(RED, dtype=torch.uint8)).all(-1).any()


def test_no_labels_no_label_row_and_nearest_upscale():
    img = torch.zeros(H, W, 3)
    img[2, 5] = torch.tensor([1.0, 1.0, 0.0])  # one yellow pixel
    out = side_by_side([img, solid(BLUE, 1)], scale=2, gap=2)
    assert out.shape == (1, H * 2, 2 * W * 2 + 2, 3)
    yellow = (out[0] == torch.tensor([255, 255, 0], dtype=torch.uint8)).all(-1)
    assert yellow.nonzero().tolist() == [[4, 10], [4, 11], [5, 10], [5, 11]]  # a 2x2 block at (2*2, 5*2)
    assert (out[0, :, W * 2 + 2:] == torch.tensor(BLUE, dtype=torch.uint8)).all()


def test_frames_follow_time_and_shorter_clips_hold_their_last_frame():
    out = side_by_side([ramp(5), ramp(3)], scale=1, gap=1)
    assert out.shape[0] == 5
    for t in range(5):
        assert (out[t, :, :W] == 10 * t).all()  # the long clip: frame t
        assert (out[t, :, W + 1:] == 10 * min(t, 2)).all()  # the short one holds frame 2


def test_panel_of_another_size_is_resized_to_the_first():
    out = side_by_side([solid(RED, 2), solid(GREEN, 2, h=2 * H, w=2 * W)], scale=1, gap=0)
    assert out.shape == (2, H, 2 * W, 3)
    assert (out[:, :, W:] == torch.tensor(GREEN, dtype=torch.uint8)).all()


def test_contact_sheet_rows_are_panels_and_columns_are_spread_frames():
    scale, gap, lh = 2, 4, 14
    panels = [ramp(17), solid(GREEN, frames=None), solid(BLUE, 17), solid(GREY, 17)]
    sheet, idx = contact_sheet(panels, ["driving", "identity", "result", "ground truth"], columns=5,
                               scale=scale, gap=gap, label_height=lh)
    assert idx == [0, 4, 8, 12, 16]
    pw, ph = W * scale, H * scale
    assert sheet.shape == (lh + 4 * (lh + ph) + 3 * gap, 5 * pw + 4 * gap, 3)
    for r in range(4):
        y0 = lh + r * (lh + ph + gap) + lh
        for c, t in enumerate(idx):
            x0 = c * (pw + gap)
            cell = region(sheet, y0, y0 + ph, x0, x0 + pw)
            want = [10 * t] * 3 if r == 0 else [RED, GREEN, BLUE, GREY][r]
            assert (cell == torch.tensor(want, dtype=torch.uint8)).all(), (r, c)
        # The row's label sits at the left of its label row.
        assert (sheet[y0 - lh:y0, :pw].int().sum(-1) > 3 * 120).any()


def test_helpers():
    assert frame_indices(17, 5) == [0, 4, 8, 12, 16]
    assert frame_indices(3, 5) == [0, 1, 2]
    assert frame_indices(1, 5) == [0] and frame_indices(0, 5) == []
    x = torch.tensor([0.0, 0.5, 1.0, 2.0]).view(1, 1, 4, 1).expand(1, 1, 4, 3)
    assert to_uint8_frames(x)[0, 0, :, 0].tolist() == [0, 128, 255, 255]
    with pytest.raises(ValueError):
        side_by_side([solid(RED)], ["a", "b"])
