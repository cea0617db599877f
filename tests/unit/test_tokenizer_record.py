"""The record of the motion tokenizer a modules file was trained with: written by the trainer's export, read
back by the modules loader, carried by motion tokens files; and the comparison Retarget to Identity makes."""

import dataclasses
import hashlib
import json

import pytest
import torch
from safetensors import safe_open

from im_animation_core.data import SyntheticPairs
from im_animation_core.errors import CheckpointError, InputError
from im_animation_core.modules import IMAnimationModules
from im_animation_core.motion import (
    TOKENIZER_KEY,
    MotionTokens,
    TokenizerRecord,
    check_tokenizer,
    load_motion_tokens,
    save_motion_tokens,
)
from im_animation_core.train import Trainer, config_from_dict
from im_animation_core.train.presets import tiny_config_dict, tiny_vae
from tools.fixture_models import tiny_modules, tiny_motion_tokenizer

pytestmark = pytest.mark.usefixtures("one_thread")


def tokens(record, frames=3, shape=(32, 12)) -> MotionTokens:
    return MotionTokens(tokens=torch.randn(frames, *shape), indices=torch.zeros(frames, shape[0], dtype=torch.long),
                        frame_indices=torch.arange(frames), fps=24.0, source_frame_count=frames, tokenizer=record)


@pytest.fixture
def record(tmp_path) -> TokenizerRecord:
    path = tmp_path / "tok.safetensors"
    tiny_motion_tokenizer().save(str(path))
    return TokenizerRecord.of_file(path)


def test_the_record_holds_the_files_sha256_and_the_sizes_its_shapes_fix(tmp_path, record):
    data = (tmp_path / "tok.safetensors").read_bytes()
    assert record.sha256 == hashlib.sha256(data).hexdigest()
    config = tiny_motion_tokenizer().config
    assert record.sizes() == {k: getattr(config, k) for k in TokenizerRecord.SIZES}
    assert (record.width, record.codebook_size, record.layers) == (64, 256, 2)


def test_the_stage2_export_records_the_tokenizer_it_exports(tmp_path):
    items = [SyntheticPairs("train", 2, frames=5, size=64, seed=5)[i] for i in range(2)]
    cfg = config_from_dict("stage2", tiny_config_dict("stage2", tmp_path / "s2", steps=1, save_every=100,
                                                      data={"augment": False}))
    Trainer("stage2", cfg, dataset=items, vae=tiny_vae()).train()
    out = tmp_path / "s2"
    modules = IMAnimationModules.from_file(str(out / "im_animation_modules.safetensors"))
    assert modules.tokenizer_record == TokenizerRecord.of_file(out / "motion_tokenizer.safetensors")
    assert modules.tokenizer_record.name == "motion_tokenizer.safetensors"


def test_modules_without_a_record_load_and_save_as_before(tmp_path, record):
    path = tmp_path / "m.safetensors"
    tiny_modules().save(str(path))
    with safe_open(str(path), framework="pt") as f:
        assert TOKENIZER_KEY not in f.metadata()
    assert IMAnimationModules.from_file(str(path)).tokenizer_record is None
    modules = tiny_modules()
    modules.tokenizer_record = record
    modules.save(str(path))
    assert IMAnimationModules.from_file(str(path)).tokenizer_record == record


@pytest.mark.parametrize("change", [{"sha256": "abc"}, {"name": "../../etc/passwd"}, {"width": -1},
                                    {"extra": 1}, {"name": "x" * 300}])
def test_a_malformed_record_is_refused_naming_the_file(tmp_path, record, change):
    text = json.dumps(dict(dataclasses.asdict(record), **change))
    with pytest.raises(CheckpointError, match=f"'m.safetensors'.*{TOKENIZER_KEY}"):
        TokenizerRecord.from_json(text, "modules file 'm.safetensors'")


def test_motion_tokens_files_keep_the_record(tmp_path, record):
    for rec in (record, None):
        save_motion_tokens(tokens(rec), str(tmp_path / "t.safetensors"))
        assert load_motion_tokens(str(tmp_path / "t.safetensors")).tokenizer == rec


def test_the_comparison(record):
    assert check_tokenizer(tokens(record), record, "m") is None
    assert check_tokenizer(tokens(record), None, "m") is None  # an older modules file: nothing to compare
    assert check_tokenizer(tokens(None), record, "m") is None  # older tokens of the right shape: unknown

    retrained = dataclasses.replace(record, name="tuned.safetensors", sha256="0" * 64)
    warning = check_tokenizer(tokens(retrained), record, "m")
    assert "'tuned.safetensors'" in warning and "'tok.safetensors'" in warning and "same sizes" in warning

    other = dataclasses.replace(record, name="other.safetensors", width=128, codebook_size=1024)
    with pytest.raises(InputError, match=r"'other.safetensors' \(width 128.*'m'.*'tok.safetensors' \(width 64"):
        check_tokenizer(tokens(other), record, "m")
    with pytest.raises(InputError, match="unknown motion tokenizer \\(16 tokens x 12 channels\\)"):
        check_tokenizer(tokens(None, shape=(16, 12)), record, "m")
