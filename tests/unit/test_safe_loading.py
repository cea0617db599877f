"""Path confinement, and loaders that check sizes before allocating and refuse non-finite values."""

import json
import os

import pytest
import torch
from safetensors.torch import load_file, save_file

from im_animation_core.errors import CheckpointError, InputError
from im_animation_core.expression import ExpressionConfig
from im_animation_core.modules import DiTSpec, IMAnimationModules
from im_animation_core.motion import MotionTokens, load_motion_tokens, save_motion_tokens
from im_animation_core.paths import confine
from im_animation_core.retarget import RetargetConfig

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def tree(tmp_path):
    allowed, outside = tmp_path / "allowed", tmp_path / "outside"
    (allowed / "sub").mkdir(parents=True)
    outside.mkdir()
    (allowed / "sub" / "ok.bin").write_bytes(b"x")
    (outside / "secret.bin").write_bytes(b"x")
    (allowed / "escape.bin").symlink_to(outside / "secret.bin")
    return allowed, outside


def refusal(given, allowed):
    with pytest.raises(InputError) as info:
        confine(given, str(allowed), [str(allowed)], "File", "the allowed folder")
    return str(info.value).replace(f"'{given.replace(chr(0), chr(92) + '0')}'", "'<given>'")


def test_a_file_inside_the_folder_is_resolved(tree):
    allowed, _ = tree
    real = os.path.realpath(allowed / "sub" / "ok.bin")
    assert confine("sub/ok.bin", str(allowed), [str(allowed)], "File", "x") == real
    assert confine(str(allowed / "sub" / ".." / "sub" / "ok.bin"), "/", [str(allowed)], "File", "x") == real


def test_every_refusal_reads_the_same(tree):
    allowed, outside = tree
    cases = ["../outside/secret.bin", str(outside / "secret.bin"), "escape.bin", "sub", "missing.bin",
             str(outside / "missing.bin"), str(outside), "/etc/passwd", "../../../../etc/passwd", "a\x00b", ""]
    messages = {refusal(given, allowed) for given in cases}
    assert len(messages) == 1, messages
    assert "allowed folder" in messages.pop()


def small_modules():
    torch.manual_seed(0)
    return IMAnimationModules(RetargetConfig(latent_channels=16, width=32, depth=1, heads=2, out_channels=4),
                              ExpressionConfig(crop_size=32, width=16, tokens=4, base_channels=8),
                              DiTSpec(dim=64, heads=2, depth=12, latent_channels=16))


def with_metadata(tmp_path, edit, tensors=None):
    modules = small_modules()
    path = tmp_path / "m.safetensors"
    modules.save(str(path))
    meta = modules.metadata()
    records = {k: json.loads(meta[k]) for k in ("retarget", "expression", "dit")}
    edit(records)
    meta.update({k: json.dumps(v) for k, v in records.items()})
    save_file(tensors if tensors is not None else load_file(str(path)), str(path), metadata=meta)
    return str(path)


@pytest.mark.parametrize("edit, words", [
    (lambda r: r["retarget"].update(width=200000), "does not match its own size metadata"),
    (lambda r: r["retarget"].update(width=2048, depth=16), "does not match its own size metadata"),
    (lambda r: r["retarget"].update(width=-128), "retarget.width"),
    (lambda r: r["retarget"].update(width="wide"), "retarget.width"),
    (lambda r: r["retarget"].update(heads=3), "not divisible by 3 heads"),
    (lambda r: r["retarget"].update(heads=0), "makes no model"),
    (lambda r: r["retarget"].update(heatmap_head="fancy"), "heatmap_head"),
    (lambda r: r["dit"].update(depth=10**12), "dit.depth"),
    (lambda r: r["expression"].update(tokens=5), "square"),
    (lambda r: r.update(dit=[1, 2]), "'dit' is missing or not an object"),
])
def test_bad_size_metadata_is_refused_before_allocating(tmp_path, monkeypatch, edit, words):
    path = with_metadata(tmp_path, edit)

    build = IMAnimationModules.__init__

    def no_allocation(self, *args, **kwargs):  # built on the meta device to check sizes: allocates nothing
        build(self, *args, **kwargs)
        real = [name for name, p in self.named_parameters() if p.device.type != "meta"]
        if real:
            raise AssertionError(f"weights allocated before the metadata was checked: {real[:3]}")

    monkeypatch.setattr(IMAnimationModules, "__init__", no_allocation)
    with pytest.raises(CheckpointError, match=words) as info:
        IMAnimationModules.from_file(path)
    assert "m.safetensors" in str(info.value)


def test_a_non_finite_weight_is_refused_by_name(tmp_path):
    tensors = {k: v.clone() for k, v in small_modules().state_dict().items()}
    tensors["motion_patch.weight"][0, 0, 0, 0, 0] = float("nan")
    path = with_metadata(tmp_path, lambda r: None, tensors)
    with pytest.raises(CheckpointError, match="motion_patch.weight"):
        IMAnimationModules.from_file(path)


def test_a_good_file_still_loads_exactly(tmp_path):
    modules = small_modules()
    modules.save(str(tmp_path / "m.safetensors"))
    loaded = IMAnimationModules.from_file(str(tmp_path / "m.safetensors"))
    for k, v in modules.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    assert all(p.device.type == "cpu" for p in loaded.parameters())


def tokens_file(tmp_path, frames=3, **changes):
    motion = MotionTokens(tokens=torch.randn(frames, 32, 12), indices=torch.zeros(frames, 32, dtype=torch.long),
                          frame_indices=torch.arange(frames), fps=24.0, source_frame_count=max(frames, 1))
    for k, v in changes.items():
        setattr(motion, k, v)
    path = str(tmp_path / "t.safetensors")
    save_motion_tokens(motion, path)
    return path


@pytest.mark.parametrize("frames, changes, words", [
    (3, {"tokens": torch.full((3, 32, 12), float("nan"))}, "NaN"),
    (0, {}, "no frames"),
    (3, {"frame_indices": torch.tensor([0, 1, 9])}, "outside the source clip of 3 frames"),
    (3, {"frame_indices": torch.tensor([2, 1, 0])}, "not increasing"),
    (3, {"fps": float("inf")}, "fps"),
    (3, {"indices": torch.zeros(2, 32, dtype=torch.long)}, "'indices'"),
    (3, {"tokens": torch.randn(3, 32)}, "'tokens'"),
])
def test_bad_motion_tokens_files_are_refused(tmp_path, frames, changes, words):
    with pytest.raises(InputError, match=words):
        load_motion_tokens(tokens_file(tmp_path, frames, **changes))


def test_good_motion_tokens_round_trip(tmp_path):
    got = load_motion_tokens(tokens_file(tmp_path))
    assert got.tokens.shape == (3, 32, 12) and got.frame_indices.tolist() == [0, 1, 2]
