"""A save that fails half-way (disk full, a file-size limit) gives a clear error and leaves no partial file.

The failure is real, not mocked: the server runs under a file-size limit (RLIMIT_FSIZE, which Python turns
into "File too large" errors), so writing a file larger than the limit fails part-way through, as on a full
disk."""

import os
import sys

import pytest
import torch

from tools.bad_files import png, tokens_file
from tools.server import ComfyServer, execution_error

resource = pytest.importorskip("resource")

# Larger than the server's log over this module's few prompts, smaller than the files the tests save.
LIMIT = 256 * 1024

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="sets RLIMIT_FSIZE on the server process")


@pytest.fixture(scope="module")
def limited():
    srv = ComfyServer()
    tokens_file(srv.base / "output" / "big_tokens.safetensors", frames=200)  # about 360 KB
    png(srv.base / "input" / "noise.png", torch.randint(0, 256, (1024, 1024, 3), dtype=torch.uint8))
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (LIMIT, hard))  # inherited by the server started now
    try:
        srv.start()
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    try:
        yield srv
    finally:
        srv.stop()


def files_under(folder) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}


def failed(srv, prompt, node) -> str:
    before = files_under(srv.base / "output")
    err = execution_error(srv.run(prompt))
    assert err is not None, "the write past the limit was reported as saved"
    message = err["exception_message"]
    assert message.startswith(f"{node}: cannot write"), message
    assert "File too large" in message and str(srv.base) not in message, message
    assert files_under(srv.base / "output") == before  # no partial or temporary file left
    assert srv.get("/system_stats")
    return message


def test_save_motion_tokens_leaves_no_partial_file(limited):
    failed(limited, {"1": {"class_type": "IMA_LoadMotionTokens", "inputs": {"path": "big_tokens.safetensors"}},
                     "2": {"class_type": "IMA_SaveMotionTokens", "inputs": {"motion_tokens": ["1", 0],
                                                                            "filename_prefix": "copy"}}},
           "Save Motion Tokens")


def test_save_pose_keypoints_writes_the_pair_whole_or_not_at_all(limited):
    pose = {"people": [{"pose_keypoints_2d": [float(v) for i in range(18) for v in (10 + i, 20 + i, 1.0)]}],
            "canvas_width": 1024, "canvas_height": 1024}
    failed(limited, {"1": {"class_type": "LoadImage", "inputs": {"image": "noise.png"}},
                     "2": {"class_type": "IMA_SavePoseKeypoints", "inputs": {
                         "pose_keypoint": pose, "filename_prefix": "clips/clip", "fps": 24.0, "images": ["1", 0]}}},
           "Save Pose Keypoints")
    clips = limited.base / "output" / "clips"
    assert not os.path.exists(clips) or not any(clips.iterdir())  # the JSON written first went with the clip
