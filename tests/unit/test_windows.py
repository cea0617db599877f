import pytest
import torch

from im_animation_core.errors import InputError
from im_animation_core.windows import Window, blend_into, plan_windows


def test_one_window_when_it_fits():
    assert plan_windows(21, 21, 4) == [Window(0, 21, 0, 0)]


def test_windows_cover_every_frame_and_overlap():
    ws = plan_windows(50, 21, 4)
    assert ws[0] == Window(0, 21, 0, 0)
    assert all(b.start == a.stop - 4 for a, b in zip(ws, ws[1:], strict=False))
    assert ws[-1].stop == 50
    assert all(w.context == 1 and w.blend <= 3 for w in ws[1:])


def test_bad_overlap_is_a_clear_error():
    with pytest.raises(InputError, match="overlap"):
        plan_windows(50, 21, 21)


def test_blend_cross_fades_and_keeps_context():
    result = torch.zeros(1, 1, 10, 1, 1)
    result[:, :, :6] = 1.0
    w = Window(start=2, stop=10, context=1, blend=3)
    blend_into(result, torch.full((1, 1, 8, 1, 1), 2.0), w)
    vals = result.flatten().tolist()
    assert vals[:3] == [1.0, 1.0, 1.0]  # before the window and the context frame
    assert vals[3:6] == pytest.approx([1.25, 1.5, 1.75])  # cross-fade from 1 to 2
    assert vals[6:] == [2.0] * 4


def test_window_inputs_keep_the_identity_and_the_context_and_align_the_motion():
    from im_animation_core.windows import window_inputs

    identity = torch.randn(1, 4, 1, 2, 2)
    motion = torch.randn(1, 3, 6, 2, 2)
    result = torch.randn(1, 4, 6, 2, 2)
    w = Window(start=2, stop=6, context=1, blend=1)
    got = window_inputs(identity, motion, w, lambda t: t + 100.0, result)
    assert got.latent.shape == (1, 4, 5, 2, 2) and got.noise_mask.shape == (1, 1, 5, 2, 2)
    assert torch.equal(got.latent[:, :, 0], identity[:, :, 0])
    assert torch.equal(got.latent[:, :, 1], result[:, :, 2])  # the carried-over context frame, raw
    assert torch.equal(got.latent[:, :, 2:], torch.full((1, 4, 3, 2, 2), 100.0))  # generated: the format's empty
    assert got.noise_mask.flatten(2)[0, 0, ::4].tolist() == [0.0, 0.0, 1.0, 1.0, 1.0]
    assert torch.equal(got.motion[:, :, 0], torch.zeros(1, 3, 2, 2))
    assert torch.equal(got.motion[:, :, 1:], motion[:, :, 2:6])
    with pytest.raises(ValueError, match="result"):
        window_inputs(identity, motion, w, lambda t: t)
