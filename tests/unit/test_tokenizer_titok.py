"""Initialisation from a TiTok-L-32 style pickle (weights_only loading, decoder ignored)."""

import pytest
import torch

from im_animation_core import MotionTokenizerConfig
from im_animation_core.errors import CheckpointError
from im_animation_core.tokenizer.testing import random_state_dict
from im_animation_core.train.titok import load_titok_init, tokenizer_from_titok

CFG = MotionTokenizerConfig(width=64, layers=2, heads=1, codebook_size=128)


def titok_pickle(path, seed=0, wrap=None):
    """What tokenizer_titok_l32.bin holds: the encoder/quantizer names plus decoder tensors."""
    sd = random_state_dict(CFG, seed=seed)
    full = dict(sd)
    full["decoder.positional_embedding"] = torch.randn(257, 64)
    full["decoder.transformer.0.attn.in_proj_weight"] = torch.randn(192, 64)
    full["decoder.ffn.0.weight"] = torch.randn(8, 64, 1, 1)
    full["pixel_decoder.conv_in.weight"] = torch.randn(4, 4, 3, 3)
    torch.save({wrap: full} if wrap else full, path)
    return sd


@pytest.mark.parametrize("wrap", [None, "state_dict"])
def test_titok_init_keeps_encoder_and_codebook(tmp_path, wrap):
    path = tmp_path / "tokenizer_titok_l32.bin"
    sd = titok_pickle(path, wrap=wrap)
    state = load_titok_init(path)
    assert set(state) == set(sd)
    model = tokenizer_from_titok(path)
    assert model.config == CFG
    assert model.encoder.patch_embed.padding == (4, 2)  # the released padding, although TiTok had none
    assert model.param_dtype == torch.float32
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, sd[name]), name
    assert model.encode(torch.rand(1, 3, 256, 256)).tokens.shape == (1, 32, 12)


def test_titok_init_with_a_new_codebook(tmp_path):
    path = tmp_path / "tokenizer_titok_l32.bin"
    sd = titok_pickle(path)
    model = tokenizer_from_titok(path, codebook_size=512)
    assert model.config.codebook_size == 512
    assert model.quantize.embedding.weight.shape == (512, 12)
    assert model.quantize.embedding.weight.abs().max() <= 1 / 512
    assert torch.equal(model.latent_tokens, sd["latent_tokens"])


def test_ddp_prefix_is_unwrapped(tmp_path):
    sd = random_state_dict(CFG)
    path = tmp_path / "ddp.bin"
    torch.save({"module." + k: v for k, v in sd.items()}, path)
    assert set(load_titok_init(path)) == set(sd)


class Arbitrary:
    """Stands for any object a pickle could carry; weights_only loading must refuse it."""


def test_unsafe_pickle_is_refused(tmp_path):
    path = tmp_path / "evil.bin"
    torch.save({"latent_tokens": torch.zeros(32, 64), "extra": Arbitrary()}, path)
    with pytest.raises(CheckpointError, match="weights-only"):
        load_titok_init(path)


def test_bad_titok_files(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_titok_init(tmp_path / "missing.bin")
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"not a pickle at all")
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_titok_init(junk)
    decoder_only = tmp_path / "decoder.bin"
    torch.save({"decoder.ffn.0.weight": torch.zeros(2)}, decoder_only)
    with pytest.raises(CheckpointError, match="no TiTok encoder"):
        load_titok_init(decoder_only)
    incomplete = tmp_path / "incomplete.bin"
    sd = random_state_dict(CFG)
    del sd["encoder.ln_post.bias"]
    torch.save(sd, incomplete)
    with pytest.raises(CheckpointError, match="encoder.ln_post.bias"):
        load_titok_init(incomplete)
