"""The released motion encoder's format at full "large" size, through Load Motion Tokenizer and Encode
Driving Video in the real ComfyUI: exactly the tokens that a plain fp32 evaluation of the released
semantics gives (random weights with realistic scales; the real checkpoint is not on this machine)."""

import pytest
import torch
from safetensors.torch import save_file

from im_animation_core.tokenizer import MotionTokenizerConfig, preprocess_frames, reference_encode
from im_animation_core.tokenizer.testing import random_state_dict
from im_animation_core.video import read_video
from tools.media import DRIVING_NAME
from tools.server import assert_ok

FRAMES = 3


@pytest.fixture(scope="module")
def large_file(server):
    sd = random_state_dict(MotionTokenizerConfig.large(), seed=7, dtype=torch.float16)  # the released dtype
    assert sum(v.numel() for v in sd.values()) > 300e6 and len(sd) == 301
    name = "ima_random_large_motion_encoder.safetensors"
    save_file(sd, str(server.models / "im_animation" / name))
    yield name, sd
    (server.models / "im_animation" / name).unlink()


@pytest.mark.default_host_only  # slow, and the pack's own numerics rather than the host's API: run on v0.33 only
def test_large_released_format_gives_the_reference_tokens(server, large_file):
    name, sd = large_file
    video = str(server.base / "input" / DRIVING_NAME)
    prompt = {
        "1": {"class_type": "IMA_LoadDrivingVideoPath", "inputs": {"video": "", "path": video, "start_frame": 0,
                                                                    "stride": 1, "max_frames": FRAMES, "width": 0,
                                                                    "height": 0}},
        "2": {"class_type": "IMA_LoadMotionTokenizer", "inputs": {"tokenizer_name": name, "dtype": "fp32"}},
        "3": {"class_type": "IMA_EncodeDrivingVideo", "inputs": {"motion_tokenizer": ["2", 0], "frames": ["1", 0],
                                                                 "fps": ["1", 1], "stride": 1, "max_frames": 0}},
        "4": {"class_type": "IMA_SaveMotionTokens", "inputs": {"motion_tokens": ["3", 0],
                                                               "filename_prefix": "large_check"}},
    }
    entry = server.run(prompt, timeout=900)
    assert_ok(entry)
    saved = entry["outputs"]["4"]["motion_tokens"][0]
    from im_animation_core.motion import load_motion_tokens
    got = load_motion_tokens(str(server.base / "output" / saved["subfolder"] / saved["filename"]))

    frames = read_video(video, max_frames=FRAMES).frames
    with torch.no_grad():
        tokens, indices = reference_encode({k: v.float() for k, v in sd.items()}, preprocess_frames(frames))
    assert got.tokens.shape == (FRAMES, 32, 12)
    assert torch.equal(got.indices, indices)
    torch.testing.assert_close(got.tokens, tokens, rtol=0, atol=1e-5)
