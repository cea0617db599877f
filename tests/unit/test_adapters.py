"""Retargeting, expression and injection modules: shapes, zero-init identity, checkpoint format."""

import json
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from im_animation_core.errors import CheckpointError, InputError
from im_animation_core.expression import ExpressionBlock, ExpressionConfig, crop_faces
from im_animation_core.frames import latent_frame_times
from im_animation_core.injection import MotionPatchEmbedding, motion_conv_for, widen_patch_embedding
from im_animation_core.keypoints import fallback_face_boxes
from im_animation_core.modules import DiTSpec, IMAnimationModules
from im_animation_core.pipeline import encode_expression, resolve_length, retarget
from im_animation_core.retarget import RetargetConfig, RetargetTransformer

REPO = Path(__file__).resolve().parents[2]


def small_modules(seed=0):
    torch.manual_seed(seed)
    return IMAnimationModules(RetargetConfig(latent_channels=16, width=32, depth=1, heads=2, out_channels=4),
                              ExpressionConfig(crop_size=32, width=16, tokens=4, base_channels=8),
                              DiTSpec(dim=64, heads=2, depth=12, latent_channels=16))


def test_retarget_output_is_on_the_latent_grid():
    model = RetargetTransformer(RetargetConfig(latent_channels=16, width=32, depth=1, heads=2, out_channels=4))
    motion = torch.randn(2, 9, 32, 12)
    out = model(motion, torch.arange(9.0), torch.randn(2, 16, 6, 10), latent_frame_times(9))
    assert out.shape == (2, 4, 3, 6, 10)


def test_retarget_output_depends_on_motion_and_on_identity():
    model = RetargetTransformer(RetargetConfig(latent_channels=16, width=32, depth=2, heads=2, out_channels=4))
    motion, ref, t = torch.randn(1, 5, 32, 12), torch.randn(1, 16, 4, 4), latent_frame_times(5)
    base = model(motion, torch.arange(5.0), ref, t)
    assert not torch.allclose(base, model(torch.randn_like(motion), torch.arange(5.0), ref, t))
    assert not torch.allclose(base, model(motion, torch.arange(5.0), torch.randn_like(ref), t))


def test_retarget_rejects_tokens_of_another_tokenizer():
    model = RetargetTransformer(RetargetConfig(latent_channels=16, width=32, depth=1, heads=2))
    with pytest.raises(InputError, match="motion tokenizer"):
        model(torch.randn(1, 5, 16, 12), torch.arange(5.0), torch.randn(1, 16, 4, 4), latent_frame_times(5))


def test_zero_initialised_motion_channels_leave_the_patch_embedding_bit_identical():
    base = torch.nn.Conv3d(16, 64, (1, 2, 2), stride=(1, 2, 2))
    patched = MotionPatchEmbedding(base, motion_conv_for(64, 4), 16)
    x = torch.randn(2, 16, 3, 8, 8)
    out = patched(torch.cat([x, torch.randn(2, 4, 3, 8, 8)], 1))
    assert torch.equal(out, base(x))
    assert patched.weight is base.weight


def test_widened_convolution_matches_split_form():
    base = torch.nn.Conv3d(16, 64, (1, 2, 2), stride=(1, 2, 2))
    motion = motion_conv_for(64, 4)
    torch.nn.init.normal_(motion.weight)
    x = torch.randn(1, 20, 2, 8, 8)
    w, b = widen_patch_embedding(base.weight, base.bias, motion)
    merged = torch.nn.functional.conv3d(x, w, b, stride=(1, 2, 2))
    torch.testing.assert_close(merged, MotionPatchEmbedding(base, motion, 16)(x), rtol=1e-5, atol=1e-5)


def test_untrained_expression_block_changes_nothing_and_trained_one_only_driven_frames():
    block = ExpressionBlock(64, 2, 16)
    x = torch.randn(2, 3 * 10, 64)
    expr = torch.randn(2, 4, 16)
    assert torch.equal(block(x, expr, skip_frames=1), x)
    torch.nn.init.normal_(block.attn.out.weight)
    y = block(x, expr, skip_frames=1)
    assert torch.equal(y[:, :10], x[:, :10])  # the reference frame gets no expression
    assert not torch.allclose(y[:, 10:], x[:, 10:])


def test_expression_block_is_frame_by_frame():
    block = ExpressionBlock(32, 2, 8)
    torch.nn.init.normal_(block.attn.out.weight)
    x, expr = torch.randn(1, 2 * 6, 32), torch.randn(2, 4, 8)
    changed = expr.clone()
    changed[1] += 1.0  # only the second frame's expression differs
    a, b = block(x, expr), block(x, changed)
    assert torch.equal(a[:, :6], b[:, :6]) and not torch.allclose(a[:, 6:], b[:, 6:])


def test_expression_block_in_place_when_sampling_equals_the_copying_form():
    block = ExpressionBlock(32, 2, 8)
    torch.nn.init.normal_(block.attn.out.weight)
    x, expr = torch.randn(2, 3 * 6, 32), torch.randn(2, 4, 8)
    with torch.no_grad():
        expected = block(x, expr, skip_frames=1)
        y = x.clone()
        out = block(y, expr, skip_frames=1, inplace=True)
    assert out.data_ptr() == y.data_ptr() and torch.equal(out, expected)
    # with autograd recording, or on a strided x, it copies as before and leaves x alone
    z = x.clone()
    assert torch.equal(block(z, expr, skip_frames=1, inplace=True).detach(), expected) and torch.equal(z, x)
    strided = x.transpose(0, 1).contiguous().transpose(0, 1)
    with torch.no_grad():
        assert torch.equal(block(strided, expr, skip_frames=1, inplace=True), expected) and torch.equal(strided, x)


def test_face_crop_takes_the_box():
    frames = torch.zeros(1, 64, 64, 3)
    frames[0, 10:20, 30:40] = 1.0
    crop = crop_faces(frames, torch.tensor([[30.0, 10.0, 40.0, 20.0]]), 16)
    assert crop.shape == (1, 3, 16, 16) and crop[:, :, 2:-2, 2:-2].min() > 0.9
    assert fallback_face_boxes(3, 100, 200).shape == (3, 4)


def test_pipeline_retarget_and_expression_shapes():
    modules = small_modules()
    motion = retarget(modules, torch.randn(12, 32, 12), torch.randn(1, 16, 1, 4, 6), 9)
    assert motion.shape == (1, 4, 3, 4, 6)
    tokens = encode_expression(modules, torch.rand(9, 48, 40, 3))
    assert tokens.shape == (9, 4, 16)
    with pytest.raises(InputError, match="more frames"):
        resolve_length(13, 12)
    assert resolve_length(0, 12) == 9


def test_expression_block_indices_follow_the_paper():
    assert DiTSpec(3072, 24, 30, 48).expression_block_indices == [5, 11, 17, 23, 29]
    assert DiTSpec(128, 1, 6, 16).expression_block_indices == [5]


def test_modules_files_without_a_reference_mode_read_as_their_runs_were_trained():
    """Files written before DiTSpec.clean_reference: 48-channel runs had a clean reference frame, 16-channel ones
    a noised one."""
    assert DiTSpec(**{"dim": 64, "heads": 2, "depth": 6, "latent_channels": 48}).clean_reference is True
    assert DiTSpec(**{"dim": 64, "heads": 2, "depth": 6, "latent_channels": 16}).clean_reference is False
    assert DiTSpec(64, 2, 6, 16, clean_reference=True).clean_reference is True
    assert DiTSpec(64, 2, 6, 16, clean_reference=True).sizes() == DiTSpec(64, 2, 6, 16).sizes()


def test_modules_file_round_trip(tmp_path):
    modules = small_modules()
    path = tmp_path / "m.safetensors"
    modules.save(str(path))
    loaded = IMAnimationModules.from_file(str(path))
    for k, v in modules.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k
    assert loaded.dit == modules.dit


def test_modules_file_errors(tmp_path):
    modules = small_modules()
    good = tmp_path / "m.safetensors"
    modules.save(str(good))
    sd = load_file(str(good))
    from safetensors import safe_open
    with safe_open(str(good), "pt") as f:
        meta = f.metadata()

    other = tmp_path / "dit.safetensors"
    save_file({"head.modulation": torch.zeros(1, 2, 8)}, str(other))
    with pytest.raises(CheckpointError, match="not an IM-Animation modules file"):
        IMAnimationModules.from_file(str(other))

    truncated = tmp_path / "trunc.safetensors"
    truncated.write_bytes(good.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="cannot read"):
        IMAnimationModules.from_file(str(truncated))

    missing = tmp_path / "missing.safetensors"
    save_file({k: v for k, v in sd.items() if not k.startswith("motion_patch")}, str(missing), metadata=meta)
    with pytest.raises(CheckpointError, match="motion_patch.weight"):
        IMAnimationModules.from_file(str(missing))

    wrong = tmp_path / "wrong.safetensors"
    save_file(sd, str(wrong), metadata=dict(meta, dit=json.dumps({"dim": 128, "heads": 1, "depth": 12,
                                                                  "latent_channels": 16})))
    with pytest.raises(CheckpointError, match="wrong shapes"):
        IMAnimationModules.from_file(str(wrong))


def test_core_never_imports_comfyui():
    found = subprocess.run(["grep", "-rE", r"^\s*(import|from) (comfy|folder_paths|nodes)\b", "im_animation_core"],
                           cwd=REPO, capture_output=True, text=True)
    assert found.returncode == 1, found.stdout  # grep exits 1 when nothing matches


def test_retarget_heatmap_head_is_per_latent_frame_on_the_grid():
    model = RetargetTransformer(RetargetConfig(latent_channels=16, width=32, depth=1, heads=2, out_channels=4,
                                               heatmap_channels=16))
    out, feats = model(torch.randn(1, 9, 32, 12), torch.arange(9.0), torch.randn(1, 16, 6, 10),
                       latent_frame_times(9), return_features=True)
    heat = model.heatmap_head(feats, (3, 5))
    assert feats.shape == (1, 3, 15, 32) and heat.shape == (1, 3, 62, 12, 20)


@pytest.mark.parametrize("head", ["upsample", "pixel_shuffle"])
def test_both_heatmap_heads_map_grid_features_to_the_same_heatmap_grid(head):
    torch.manual_seed(0)
    model = RetargetTransformer(RetargetConfig(latent_channels=16, width=32, depth=1, heads=2, out_channels=4,
                                               heatmap_channels=16, heatmap_head=head))
    _, feats = model(torch.randn(1, 5, 32, 12), torch.arange(5.0), torch.randn(1, 16, 6, 10),
                     latent_frame_times(5), return_features=True)
    heat = model.heatmap_head(feats, (3, 5))
    assert heat.shape == (1, 2, 62, 12, 20)


def test_pixel_shuffle_head_round_trips_through_a_modules_file(tmp_path):
    modules = IMAnimationModules(RetargetConfig(latent_channels=16, width=32, depth=1, heads=2, out_channels=4,
                                                heatmap_channels=16, heatmap_head="pixel_shuffle"),
                                 ExpressionConfig(crop_size=32, width=16, tokens=4, base_channels=8),
                                 DiTSpec(dim=64, heads=2, depth=12, latent_channels=16))
    modules.save(str(tmp_path / "m.safetensors"))
    loaded = IMAnimationModules.from_file(str(tmp_path / "m.safetensors"))
    assert loaded.retarget.config.heatmap_head == "pixel_shuffle"
    for k, v in modules.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k
    with pytest.raises(ValueError, match="heatmap_head"):
        RetargetConfig(heatmap_head="bilinear")


def test_ablation_modules_file_is_refused_by_the_inference_loader(tmp_path):
    modules = small_modules()
    path = tmp_path / "sa.safetensors"
    save_file({k: v.contiguous() for k, v in modules.state_dict().items()}, str(path),
              metadata=dict(modules.metadata(), im_animation_retarget="self_attention"))
    with pytest.raises(CheckpointError, match="ablation"):
        IMAnimationModules.from_file(str(path))
    assert IMAnimationModules.from_file(str(path), allow_ablation=True).dit == modules.dit


def test_expression_block_takes_per_sample_tokens():
    """Sampled through ComfyUI, positive and negative run as one batch, each with its own tokens [B,F,K,W]."""
    torch.manual_seed(0)
    block = ExpressionBlock(32, 2, 8)
    torch.nn.init.normal_(block.attn.out.weight, std=0.1)
    x = torch.randn(2, 3 * 4, 32)  # 3 latent frames of 4 tokens, the first the reference
    a, b = torch.randn(2, 5, 8), torch.randn(2, 5, 8)
    both = block(x, torch.stack([a, b]), skip_frames=1)
    torch.testing.assert_close(both[:1], block(x[:1], a, skip_frames=1))
    torch.testing.assert_close(both[1:], block(x[1:], b, skip_frames=1))
    with pytest.raises(InputError, match="samples"):
        block(x, torch.stack([a, b, a]), skip_frames=1)
