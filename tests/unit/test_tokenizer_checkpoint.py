"""Strict loading of motion tokenizer files: released format round trip, config.yaml, bad files."""

import logging

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from im_animation_core import MotionTokenizer, MotionTokenizerConfig
from im_animation_core.errors import CheckpointError
from im_animation_core.tokenizer import read_config_yaml, reference_encode
from im_animation_core.tokenizer.checkpoint import config_yaml_text, expected_shapes
from im_animation_core.tokenizer.testing import random_state_dict

TINY = MotionTokenizerConfig(width=64, layers=2, heads=1, codebook_size=256)

RELEASED_YAML = """model:
  vq_model:
    codebook_size: {codebook}
    token_size: 12
    use_l2_norm: true
    commitment_cost: 0.25
    vit_enc_model_size: {size}
    vit_enc_patch_size: 16
    num_latent_tokens: 32
    quantize_mode: {mode}
    is_legacy: {legacy}
dataset:
  preprocessing:
    height_size: 256
    width_size: 256
"""


def write(path, tensors):
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))
    return path


@pytest.fixture
def tiny_sd():
    return random_state_dict(TINY, seed=0)


def test_save_writes_the_released_format_and_loads_back(tmp_path, tiny_sd):
    model = MotionTokenizer.from_state_dict(tiny_sd)
    path = tmp_path / "motion_encoder_latest.safetensors"
    model.save(path)
    with safe_open(str(path), "pt") as f:
        names = set(f.keys())
        assert all(f.get_tensor(k).dtype == torch.float16 for k in names)
    assert names == set(expected_shapes(TINY))
    loaded = MotionTokenizer.from_file(path)
    assert loaded.config == TINY
    assert loaded.param_dtype == torch.float32 and loaded.param_device.type == "cpu"
    assert not loaded.training
    for name, tensor in loaded.state_dict().items():
        assert torch.equal(tensor, tiny_sd[name].half().float()), name
    x = torch.rand(2, 3, 256, 256)
    tokens, indices = reference_encode({k: v.half() for k, v in tiny_sd.items()}, x)
    out = loaded.encode(x)
    assert torch.equal(out.indices, indices)


def test_dtype_argument_and_full_precision_save(tmp_path, tiny_sd):
    path = tmp_path / "m.safetensors"
    MotionTokenizer.from_state_dict(tiny_sd).save(path, dtype=None)
    loaded = MotionTokenizer.from_file(path, dtype=torch.bfloat16)
    assert loaded.param_dtype == torch.bfloat16
    assert torch.equal(MotionTokenizer.from_file(path).latent_tokens, tiny_sd["latent_tokens"])


def test_missing_tensor_is_named(tmp_path, tiny_sd):
    del tiny_sd["encoder.transformer.1.mlp.c_proj.bias"]
    path = write(tmp_path / "m.safetensors", tiny_sd)
    with pytest.raises(CheckpointError, match=r"Missing 1 tensor\(s\): encoder\.transformer\.1\.mlp\.c_proj"):
        MotionTokenizer.from_file(path)


def test_unexpected_tensor_is_named(tmp_path, tiny_sd):
    tiny_sd["encoder.extra_head.weight"] = torch.zeros(3)
    path = write(tmp_path / "m.safetensors", tiny_sd)
    with pytest.raises(CheckpointError, match=r"Unexpected 1 tensor\(s\): encoder\.extra_head\.weight"):
        MotionTokenizer.from_file(path)


def test_wrong_shape_is_named(tmp_path, tiny_sd):
    tiny_sd["encoder.transformer.0.attn.out_proj.weight"] = torch.zeros(64, 32)
    path = write(tmp_path / "m.safetensors", tiny_sd)
    with pytest.raises(CheckpointError, match=r"out_proj\.weight \[64, 32\] \(expected \[64, 64\]\)"):
        MotionTokenizer.from_file(path)


def test_wan_dit_file_is_recognised(tmp_path):
    wan = {"patch_embedding.weight": torch.zeros(128, 16, 1, 2, 2), "head.modulation": torch.zeros(1, 2, 128),
           "blocks.0.self_attn.q.weight": torch.zeros(128, 128), "head.head.weight": torch.zeros(64, 128)}
    path = write(tmp_path / "wan2.2_ti2v_5B_fp16.safetensors", wan)
    with pytest.raises(CheckpointError, match="Wan video diffusion model") as err:
        MotionTokenizer.from_file(path)
    assert "motion_encoder_latest.safetensors" in str(err.value)


def test_wan_vae_file_is_recognised(tmp_path):
    vae = {"decoder.middle.0.residual.0.gamma": torch.zeros(8, 1, 1, 1),
           "encoder.conv1.weight": torch.zeros(4)}
    with pytest.raises(CheckpointError, match="Wan VAE"):
        MotionTokenizer.from_file(write(tmp_path / "vae.safetensors", vae))


def test_prefixed_training_checkpoint_is_explained(tmp_path, tiny_sd):
    path = write(tmp_path / "ckpt.safetensors", {"motion_encoder." + k: v for k, v in tiny_sd.items()})
    with pytest.raises(CheckpointError, match="prefix 'motion_encoder.'"):
        MotionTokenizer.from_file(path)


def test_truncated_file(tmp_path, tiny_sd):
    path = write(tmp_path / "m.safetensors", tiny_sd)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        MotionTokenizer.from_file(path)


def test_pickle_and_missing_files(tmp_path, tiny_sd):
    pickle_path = tmp_path / "m.pt"
    torch.save(tiny_sd, pickle_path)
    with pytest.raises(CheckpointError, match="pickle"):
        MotionTokenizer.from_file(pickle_path)
    with pytest.raises(CheckpointError, match="does not exist"):
        MotionTokenizer.from_file(tmp_path / "nope.safetensors")
    (tmp_path / "empty.safetensors").write_bytes(b"")
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        MotionTokenizer.from_file(tmp_path / "empty.safetensors")


def test_nan_weights(tmp_path, tiny_sd):
    tiny_sd["encoder.ln_post.weight"][3] = float("nan")
    with pytest.raises(CheckpointError, match="NaN.*encoder.ln_post.weight"):
        MotionTokenizer.from_file(write(tmp_path / "m.safetensors", tiny_sd))


def test_other_token_count_loads_when_consistent_and_is_reported(tmp_path, caplog):
    cfg = MotionTokenizerConfig(width=64, layers=1, heads=1, num_latent_tokens=16, codebook_size=64)
    sd = random_state_dict(cfg)
    path = write(tmp_path / "m.safetensors", sd)
    with caplog.at_level(logging.WARNING):
        model = MotionTokenizer.from_file(path)
    assert model.config.num_latent_tokens == 16
    assert "16 motion tokens" in caplog.text
    assert model.encode(torch.rand(1, 3, 256, 256)).tokens.shape == (1, 16, 12)
    sd["encoder.latent_token_positional_embedding"] = torch.zeros(32, 64)  # inconsistent
    with pytest.raises(CheckpointError, match=r"positional_embedding \[32, 64\] \(expected \[16, 64\]\)"):
        MotionTokenizer.from_file(write(tmp_path / "bad.safetensors", sd))


def test_config_yaml_beside_the_file_is_read(tmp_path):
    cfg = MotionTokenizerConfig.small()  # the yaml can only name small / base / large
    shapes = expected_shapes(cfg)
    yaml_text = RELEASED_YAML.format(codebook=4096, size="small", mode="vq", legacy="true")
    (tmp_path / "config.yaml").write_text(yaml_text)
    keys = read_config_yaml(tmp_path / "config.yaml")
    assert keys == {"codebook_size": 4096, "token_size": 12, "use_l2_norm": True, "model_size": "small",
                    "patch_size": 16, "num_latent_tokens": 32, "image_size": 256}
    assert MotionTokenizerConfig.from_state_dict(shapes, keys) == cfg
    assert config_yaml_text(cfg) == yaml_text


def test_config_yaml_heads_override_and_conflicts(tmp_path, tiny_sd):
    path = write(tmp_path / "m.safetensors", tiny_sd)
    yaml_path = tmp_path / "config.yaml"
    yaml_path.write_text(RELEASED_YAML.format(codebook=256, size="large", mode="vq", legacy="true"))
    with pytest.raises(CheckpointError, match="config.yaml says model size 'large'"):
        MotionTokenizer.from_file(path)
    yaml_path.write_text(RELEASED_YAML.format(codebook=4096, size="large", mode="vq", legacy="true")
                         .replace("    vit_enc_model_size: large\n", ""))
    with pytest.raises(CheckpointError, match="codebook_size = 4096 but the weights have 256"):
        MotionTokenizer.from_file(path)
    yaml_path.write_text(RELEASED_YAML.format(codebook=256, size="small", mode="fsq", legacy="true"))
    with pytest.raises(CheckpointError, match="quantize_mode 'fsq'"):
        MotionTokenizer.from_file(path)
    yaml_path.write_text(RELEASED_YAML.format(codebook=256, size="small", mode="vq", legacy="false"))
    with pytest.raises(CheckpointError, match="is_legacy"):
        MotionTokenizer.from_file(path)
    yaml_path.write_text("model: [unclosed")
    with pytest.raises(CheckpointError, match="not valid YAML"):
        MotionTokenizer.from_file(path)


def test_explicit_config_path_and_l2_setting(tmp_path, tiny_sd):
    path = write(tmp_path / "m.safetensors", tiny_sd)
    other = tmp_path / "elsewhere.yaml"
    other.write_text(RELEASED_YAML.format(codebook=256, size="small", mode="vq", legacy="true")
                     .replace("    vit_enc_model_size: small\n", "")
                     .replace("use_l2_norm: true", "use_l2_norm: false"))
    model = MotionTokenizer.from_file(path, config_path=other)
    assert model.config.use_l2_norm is False and model.quantize.use_l2_norm is False
    assert MotionTokenizer.from_file(path).config.use_l2_norm is True


def test_heads_for_width_not_multiple_of_64_need_a_config(tiny_sd):
    cfg = MotionTokenizerConfig(width=96, layers=1, heads=2)
    with pytest.raises(CheckpointError, match="heads"):
        MotionTokenizer.from_state_dict(random_state_dict(cfg))
    assert MotionTokenizer.from_state_dict(random_state_dict(cfg), config=cfg).config.heads == 2


def test_from_state_dict_with_a_mismatching_config(tiny_sd):
    with pytest.raises(CheckpointError, match="Wrong shape"):
        MotionTokenizer.from_state_dict(tiny_sd, config=MotionTokenizerConfig(width=64, layers=2, heads=1))


def test_small_tokenizer_with_scaled_padding_loads_without_yaml(tmp_path):
    """8-pixel patches with the released padding scaled to them, (2, 1), on 64-pixel frames: the sizes follow
    from the shapes alone (the demo tokenizer ships without a config.yaml)."""
    cfg = MotionTokenizerConfig(width=64, layers=1, heads=1, image_size=64, patch_size=8, patch_padding=(2, 1),
                                codebook_size=16)
    path = tmp_path / "small.safetensors"
    MotionTokenizer(cfg).save(path)
    assert not (tmp_path / "config.yaml").exists()
    assert MotionTokenizer.from_file(path).config == cfg


def test_a_config_belongs_to_one_weights_file(tmp_path, tiny_sd):
    """A released config.yaml for the large encoder beside a small tokenizer: passed over when another
    tokenizer shares the folder, reported when the small one is alone; <name>.yaml always applies."""
    small = tmp_path / "small.safetensors"
    save_file(tiny_sd, str(small))
    (tmp_path / "config.yaml").write_text(config_yaml_text(MotionTokenizerConfig.large()))
    with pytest.raises(CheckpointError, match="config.yaml"):
        MotionTokenizer.from_file(small)  # the sole tokenizer: its config.yaml is read and does not fit
    save_file(tiny_sd, str(tmp_path / "other.safetensors"))
    assert MotionTokenizer.from_file(small).config.width == tiny_sd["latent_tokens"].shape[1]
    (tmp_path / "small.yaml").write_text(config_yaml_text(MotionTokenizerConfig.large()))
    with pytest.raises(CheckpointError, match="small.yaml says model size 'large'"):
        MotionTokenizer.from_file(small)  # its own yaml is strict
