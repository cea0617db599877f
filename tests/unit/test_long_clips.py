"""Long clips are retargeted in training-length segments, each laid out like a training clip."""

import pytest
import torch

from im_animation_core.expression import ExpressionConfig
from im_animation_core.frames import latent_frame_count
from im_animation_core.modules import DiTSpec, IMAnimationModules
from im_animation_core.pipeline import retarget, retarget_segments
from im_animation_core.retarget import RetargetConfig

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("length, clip, expected", [
    (17, 17, [(0, 17)]),
    (9, 17, [(0, 9)]),
    (49, 17, [(0, 17), (16, 33), (32, 49)]),
    (53, 17, [(0, 17), (16, 33), (32, 49), (48, 53)]),
    (197, 81, [(0, 81), (80, 161), (160, 197)]),
])
def test_segments_cover_every_latent_frame_once(length, clip, expected):
    segments = retarget_segments(length, clip)
    assert segments == expected
    new_latents = [latent_frame_count(b - a) - (i > 0) for i, (a, b) in enumerate(segments)]
    assert sum(new_latents) == latent_frame_count(length)
    assert all((b - a) % 4 == 1 and a % 4 == 0 for a, b in segments)


def test_the_start_of_a_long_clip_is_retargeted_as_a_short_clip_would_be():
    torch.manual_seed(0)
    modules = IMAnimationModules(RetargetConfig(latent_channels=16, width=32, depth=1, heads=2, out_channels=4),
                                 ExpressionConfig(crop_size=32, width=16, tokens=4, base_channels=8),
                                 DiTSpec(dim=64, heads=2, depth=6, latent_channels=16)).eval()
    tokens, ref = torch.randn(49, 32, 12), torch.randn(1, 16, 1, 4, 4)
    short = retarget(modules, tokens, ref, 17)
    long = retarget(modules, tokens, ref, 49)
    assert long.shape[2] == 13
    torch.testing.assert_close(long[:, :, :5], short, rtol=0, atol=1e-6)
    # The second segment starts at frame 16 with times from 0: its new latent frames are those of a short run
    # on frames 16..32.
    torch.testing.assert_close(long[:, :, 5:9], retarget(modules, tokens[16:], ref, 17)[:, :, 1:], rtol=0, atol=1e-6)
    whole = retarget(modules, tokens, ref, 49, clip_frames=49)
    assert not torch.allclose(whole[:, :, :5], short, atol=1e-4)  # what the whole-clip pass did


def test_the_training_clip_length_is_recorded_only_when_it_is_not_the_default(tmp_path):
    from safetensors import safe_open

    modules = IMAnimationModules(RetargetConfig(latent_channels=16, width=32, depth=1, heads=2, out_channels=4),
                                 ExpressionConfig(crop_size=32, width=16, tokens=4, base_channels=8),
                                 DiTSpec(dim=64, heads=2, depth=6, latent_channels=16))
    modules.save(str(tmp_path / "a.safetensors"))
    with safe_open(str(tmp_path / "a.safetensors"), framework="pt") as f:
        assert "clip_frames" not in f.metadata()  # files of 17-frame runs keep their former bytes
    assert IMAnimationModules.from_file(str(tmp_path / "a.safetensors")).clip_frames == 17
    modules.clip_frames = 81
    modules.save(str(tmp_path / "b.safetensors"))
    assert IMAnimationModules.from_file(str(tmp_path / "b.safetensors")).clip_frames == 81
