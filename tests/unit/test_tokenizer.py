"""Motion tokenizer contract: released schema, shapes/dtypes, fast path == plain reference, legacy details."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F

import im_animation_core.tokenizer.model as model_module
from im_animation_core import MotionTokenizer, MotionTokenizerConfig
from im_animation_core.errors import InputError
from im_animation_core.tokenizer import MotionEncoding, reference_encode
from im_animation_core.tokenizer.checkpoint import expected_shapes
from im_animation_core.tokenizer.reference import reference_latents
from im_animation_core.tokenizer.testing import random_state_dict
from lab.bench.bench_tokenizer import frames as bench_frames

SMALL = MotionTokenizerConfig(width=128, layers=3, heads=2)


def released_large_schema() -> dict[str, tuple]:
    """Facts §1, written out independently of the package."""
    w = 1024
    schema = {
        "encoder.patch_embed.weight": (w, 3, 16, 16), "encoder.patch_embed.bias": (w,),
        "encoder.class_embedding": (1, w), "encoder.positional_embedding": (257, w),
        "encoder.latent_token_positional_embedding": (32, w), "latent_tokens": (32, w),
        "encoder.ln_pre.weight": (w,), "encoder.ln_pre.bias": (w,),
        "encoder.ln_post.weight": (w,), "encoder.ln_post.bias": (w,),
        "encoder.conv_out.weight": (12, w, 1, 1), "encoder.conv_out.bias": (12,),
        "quantize.embedding.weight": (4096, 12),
    }
    for i in range(24):
        p = f"encoder.transformer.{i}."
        schema.update({
            p + "ln_1.weight": (w,), p + "ln_1.bias": (w,), p + "ln_2.weight": (w,), p + "ln_2.bias": (w,),
            p + "attn.in_proj_weight": (3 * w, w), p + "attn.in_proj_bias": (3 * w,),
            p + "attn.out_proj.weight": (w, w), p + "attn.out_proj.bias": (w,),
            p + "mlp.c_fc.weight": (4 * w, w), p + "mlp.c_fc.bias": (4 * w,),
            p + "mlp.c_proj.weight": (w, 4 * w), p + "mlp.c_proj.bias": (w,),
        })
    return schema


# [n,3,256,256] smooth random images in [0,1] with varied brightness (more varied tokens than noise): the
# benchmark's own inputs.
frames_like_video = bench_frames


@pytest.fixture(scope="module")
def small_model():
    sd = random_state_dict(SMALL, seed=1)
    return sd, MotionTokenizer.from_state_dict(sd)


def test_large_module_has_exactly_the_released_tensors():
    with torch.device("meta"):
        model = MotionTokenizer(MotionTokenizerConfig.large())
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert shapes == released_large_schema()
    assert len(shapes) == 301
    assert sum(v.numel() for v in model.state_dict().values()) == 303_492_108  # 607 MB in float16
    assert expected_shapes(MotionTokenizerConfig.large()) == shapes


@pytest.mark.parametrize("name,width,layers,heads", [("small", 512, 8, 8), ("base", 768, 12, 12),
                                                     ("large", 1024, 24, 16)])
def test_config_inferred_from_shapes(name, width, layers, heads):
    preset = MotionTokenizerConfig.preset(name)
    assert (preset.width, preset.layers, preset.heads) == (width, layers, heads)
    shapes = expected_shapes(preset)  # shape tuples only: nothing allocated
    inferred = MotionTokenizerConfig.from_state_dict(shapes)
    assert inferred == preset
    assert inferred.model_size == name
    assert inferred.grid_size == (16, 16) and inferred.seq_len == 1 + 256 + 32


def test_config_infers_non_default_sizes():
    cfg = MotionTokenizerConfig(width=192, layers=2, heads=3, num_latent_tokens=16, token_size=8,
                                codebook_size=300, mlp_ratio=2)
    assert MotionTokenizerConfig.from_state_dict(expected_shapes(cfg)) == cfg


def test_encode_contract(small_model):
    sd, model = small_model
    x = frames_like_video(3)
    out = model.encode(x)
    assert isinstance(out, MotionEncoding)
    assert out.tokens.shape == (3, 32, 12) and out.tokens.dtype == torch.float32
    assert out.indices.shape == (3, 32) and out.indices.dtype == torch.int64
    assert int(out.indices.min()) >= 0 and int(out.indices.max()) < 4096
    codebook = F.normalize(sd["quantize.embedding.weight"], dim=-1)
    assert torch.equal(out.tokens, codebook[out.indices])
    torch.testing.assert_close(out.tokens.norm(dim=-1), torch.ones(3, 32))
    assert out.released_layout().shape == (3, 12, 1, 32)
    assert not out.tokens.requires_grad


@pytest.mark.parametrize("fused,onednn", [(True, True), (True, False), (False, False)])
def test_fast_path_equals_reference(small_model, monkeypatch, fused, onednn):
    """Every inference code path (oneDNN fused kernels, their F.linear/addmm fallback, plain blocks)
    against the reference."""
    sd, model = small_model
    monkeypatch.setattr(model_module, "FUSED_INFERENCE", fused)
    monkeypatch.setattr(model_module, "USE_ONEDNN", onednn)
    x = frames_like_video(8, seed=2)
    ref_tokens, ref_indices = reference_encode(sd, x)
    out = model.encode(x)
    assert ref_indices.unique().numel() > 32  # the check is not vacuous
    agree = (out.indices == ref_indices).float().mean().item()
    assert agree >= 0.999
    assert (out.tokens - ref_tokens).abs().max().item() <= 1e-5
    # the unquantised outputs agree too
    ref_z = reference_latents(sd, x)
    with torch.inference_mode():
        z = model.encoder(x, model.latent_tokens)
    torch.testing.assert_close(z, ref_z[:, :, 0, :].permute(0, 2, 1), rtol=1e-4, atol=1e-4)


def test_onednn_kernels_are_available_here():
    # Not required for correctness (there is a fallback), but the CPU speed figures rely on it.
    assert model_module.onednn_linear_available()


def test_autograd_path_matches_and_gives_gradients(small_model):
    sd, _ = small_model
    model = MotionTokenizer.from_state_dict(sd).train()
    x = frames_like_video(2, seed=3)
    out = model(x)
    ref_tokens, ref_indices = reference_encode(sd, x)
    assert torch.equal(out.indices, ref_indices)
    torch.testing.assert_close(out.tokens.detach(), ref_tokens, atol=1e-5, rtol=0)
    (out.tokens.sum() + (out.latents - out.tokens.detach()).square().sum()).backward()
    assert model.latent_tokens.grad is not None and model.latent_tokens.grad.abs().sum() > 0
    assert model.encoder.patch_embed.weight.grad.abs().sum() > 0


def test_legacy_reshape_is_a_plain_reshape():
    x = torch.arange(2 * 3 * 4, dtype=torch.float32).reshape(2, 3, 4)  # [N,L,W]
    out = model_module.legacy_reshape(x)
    assert out.shape == (2, 4, 3, 1)
    assert torch.equal(out, x.reshape(2, 4, 3, 1))
    assert not torch.equal(out, x.transpose(1, 2).unsqueeze(-1))


def test_legacy_reshape_matters(small_model, monkeypatch):
    sd, model = small_model
    x = frames_like_video(4, seed=4)
    released = model.encode(x).indices
    monkeypatch.setattr(model_module, "legacy_reshape", lambda t: t.transpose(1, 2).unsqueeze(-1))
    transposed = model.encode(x).indices
    assert (released != transposed).float().mean() > 0.5


def test_patch_padding_matters(small_model):
    sd, model = small_model
    assert model.encoder.patch_embed.padding == (4, 2)
    x = frames_like_video(4, seed=5)
    released = model.encode(x).indices
    unpadded_cfg = dataclasses.replace(model.config, patch_padding=(0, 0))
    assert unpadded_cfg.grid_size == (16, 16)  # same shapes, so the padding is easy to lose
    unpadded = MotionTokenizer.from_state_dict(sd, config=unpadded_cfg)
    assert (unpadded.encode(x).indices != released).any()
    with torch.inference_mode():
        shift = model.encoder(x, model.latent_tokens) - unpadded.encoder(x, unpadded.latent_tokens)
    shift = shift.abs().max()
    assert shift > 1e-2  # a thousand times the fast-vs-reference tolerance
    # and the reference agrees with the padded model, not the unpadded one
    assert torch.equal(reference_encode(sd, x)[1], released)


def test_quantizer_picks_the_nearest_normalised_row():
    gen = torch.Generator().manual_seed(0)
    quantizer = model_module.VectorQuantizer(64, 12)
    with torch.no_grad():
        quantizer.embedding.weight.copy_(torch.randn(64, 12, generator=gen))
    z = torch.randn(3, 32, 12, generator=gen) * 5
    out = quantizer(z)
    zn, cn = F.normalize(z, dim=-1), F.normalize(quantizer.embedding.weight.detach(), dim=-1)
    brute = ((zn[:, :, None, :] - cn[None, None]) ** 2).sum(-1).argmin(-1)
    assert torch.equal(out.indices, brute)
    torch.testing.assert_close(out.latents, zn)


def test_half_precision_encode_runs_and_mostly_agrees(small_model):
    sd, _ = small_model
    model = MotionTokenizer.from_state_dict(sd, dtype=torch.bfloat16)
    assert model.param_dtype == torch.bfloat16
    x = frames_like_video(2, seed=6)
    out = model.encode(x)
    assert out.tokens.dtype == torch.float32 and out.indices.dtype == torch.int64
    agree = (out.indices == reference_encode(sd, x)[1]).float().mean().item()
    assert agree > 0.5  # bf16 on random weights: a smoke test, not the fp32 contract


@pytest.mark.parametrize("bad,match", [
    (torch.rand(2, 3, 128, 128), r"\[N,3,256,256\]"),
    (torch.rand(2, 4, 256, 256), r"\[N,3,256,256\]"),
    (torch.rand(3, 256, 256), r"\[N,3,256,256\]"),
    (torch.rand(0, 3, 256, 256), "empty"),
    (torch.zeros(1, 3, 256, 256, dtype=torch.uint8), "float"),
])
def test_encode_rejects_bad_pixels(small_model, bad, match):
    with pytest.raises(InputError, match=match):
        small_model[1].encode(bad)
