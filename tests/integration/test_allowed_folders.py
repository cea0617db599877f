"""Widening what the file-reading nodes may read: a folder named in IMA_ALLOWED_DIRS or under the
'im_animation_inputs' key of an extra_model_paths.yaml becomes readable; every other folder stays refused."""

import os

import pytest

from tools.bad_files import tokens_file
from tools.server import ComfyServer, assert_ok, execution_error

REFUSED = "is not a readable file in the allowed folders"


@pytest.fixture(scope="module")
def widened(tmp_path_factory):
    root = tmp_path_factory.mktemp("folders")
    by_env, by_yaml, other = root / "by_env", root / "by_yaml", root / "other"
    for folder in (by_env, by_yaml, other):
        folder.mkdir()
        tokens_file(folder / "t.safetensors")
    config = root / "extra_model_paths.yaml"
    config.write_text(f"shared_clips:\n  im_animation_inputs: {by_yaml}\n")
    srv = ComfyServer(extra_args=["--extra-model-paths-config", str(config)])
    before = os.environ.get("IMA_ALLOWED_DIRS")
    os.environ["IMA_ALLOWED_DIRS"] = os.pathsep.join([str(by_env), str(root / "missing")])
    try:
        with srv:
            yield srv, by_env, by_yaml, other
    finally:
        if before is None:
            del os.environ["IMA_ALLOWED_DIRS"]
        else:
            os.environ["IMA_ALLOWED_DIRS"] = before


def load_tokens(srv, path):
    return srv.run({"1": {"class_type": "IMA_LoadMotionTokens", "inputs": {"path": path}},
                    "2": {"class_type": "IMA_SaveMotionTokens", "inputs": {"motion_tokens": ["1", 0],
                                                                           "filename_prefix": "copy"}}})


def test_allowed_folders_are_readable_and_others_are_not(widened):
    srv, by_env, by_yaml, other = widened
    assert_ok(load_tokens(srv, str(by_env / "t.safetensors")))
    assert_ok(load_tokens(srv, str(by_yaml / "t.safetensors")))
    err = execution_error(load_tokens(srv, str(other / "t.safetensors")))
    assert err is not None and REFUSED in err["exception_message"]
    err = execution_error(load_tokens(srv, str(by_env / ".." / "other" / "t.safetensors")))
    assert err is not None and REFUSED in err["exception_message"]
