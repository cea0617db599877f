import torch

from im_animation_core.frames import (
    latent_frame_count,
    latent_frame_groups,
    latent_frame_times,
    pool_to_latent_frames,
    valid_length,
)


def test_wan_causal_mapping():
    assert latent_frame_count(81) == 21 and latent_frame_count(1) == 1 and latent_frame_count(5) == 2
    assert latent_frame_groups(9) == [(0, 1), (1, 5), (5, 9)]
    assert latent_frame_times(9).tolist() == [0.0, 2.5, 6.5]
    groups = latent_frame_groups(81)
    assert sum(e - s for s, e in groups) == 81 and groups[-1][1] == 81


def test_valid_length_rounds_down_to_4k_plus_1():
    assert [valid_length(n) for n in (0, 1, 4, 5, 8, 9, 120, 121)] == [0, 1, 1, 5, 5, 9, 117, 121]


def test_pool_averages_each_latent_frames_pixels():
    x = torch.arange(9, dtype=torch.float32)
    assert pool_to_latent_frames(x).tolist() == [0.0, 2.5, 6.5]
