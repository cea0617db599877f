"""Trainer building blocks: configs (paper defaults, JSON, errors, resume diff), the differentiable VQ, heatmap
targets on latent frames, the flow-matching convention, the ablation modules and their files."""

import json

import pytest
import torch
import torch.nn.functional as F

from im_animation_core.dit_targets import denoised_from_output
from im_animation_core.errors import CheckpointError
from im_animation_core.frames import latent_frame_groups
from im_animation_core.heatmaps import heatmap_argmax, render_heatmaps
from im_animation_core.modules import DiTSpec, IMAnimationModules
from im_animation_core.retarget import RetargetConfig, RetargetTransformer
from im_animation_core.tokenizer import MotionTokenizer, MotionTokenizerConfig, preprocess_frames
from im_animation_core.train import (
    ConfigError,
    ConvMotionEncoder,
    SelfAttentionRetarget,
    Stage1Config,
    Stage2Config,
    Stage3Config,
    TokenizerEncoder,
    config_from_dict,
    config_to_dict,
    diff_configs,
    load_config,
    load_modules,
    save_modules,
)
from im_animation_core.train.__main__ import _apply_sets
from im_animation_core.train.encoders import ConvEncoderConfig
from im_animation_core.train.modules_file import use_retarget_kind
from im_animation_core.train.targets import (
    default_shift,
    latent_frame_heatmaps,
    noisy_latent,
    sample_sigmas,
    shift_sigma,
    square_frame_heatmaps,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def test_defaults_are_the_papers_settings():
    s1, s2, s3 = Stage1Config(), Stage2Config(), Stage3Config()
    assert (s1.steps, s2.steps, s3.steps) == (5000, 10000, 30000)
    assert s1.optim.lr == s2.optim.lr == 1e-4
    assert (s3.dit_lr, s3.optim.lr) == (1e-5, 5e-5)
    assert s1.data.frames == s2.data.frames == s3.data.frames == 81
    assert s3.retarget_weight == 10.0
    assert s1.tokenizer.commitment_cost == 0.25
    assert s2.data.augment and not s3.data.augment and not s1.data.augment
    assert (s2.retarget, s2.motion_encoder, s2.heatmap_supervision) == ("mask_tokens", "tokenizer", True)
    # Wan2.2 TI2V-5B sizes for the DiT by default.
    assert (s3.dit.dim, s3.dit.num_layers, s3.dit.in_dim, s3.dit.text_dim) == (3072, 30, 48, 4096)


def test_json_round_trip_and_partial_configs(tmp_path):
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps({"stage": "stage3", "steps": 7, "optim": {"lr": 0.5}, "dit": {"dim": 256},
                                "conv_encoder": {"channels": [8, 16]}}))
    cfg = load_config("stage3", path)
    assert (cfg.steps, cfg.optim.lr, cfg.optim.weight_decay, cfg.dit.dim, cfg.dit.num_layers) == (7, 0.5, 0.01, 256, 30)
    assert cfg.conv_encoder.channels == (8, 16)
    again = config_from_dict("stage3", config_to_dict(cfg))
    assert again == cfg


@pytest.mark.parametrize("data, match", [
    ({"optim": {"learning_rate": 1}}, r"unknown config field\(s\) 'optim.learning_rate'"),
    ({"stepz": 1}, "'stepz'"),
    ({"steps": "ten"}, "'steps' must be an integer"),
    ({"data": {"frames": 80}}, "4k\\+1"),
    ({"motion_encoder": "vae"}, "'motion_encoder' is 'vae'; choose one of tokenizer, conv"),
    ({"heatmap_supervision": False}, "only loss of stage2"),
    ({"stage": "stage1"}, "for stage 'stage1' but 'stage2'"),
    ({"retarget": "cross"}, "mask_tokens, self_attention"),
])
def test_bad_configs_name_the_field(data, match):
    with pytest.raises(ConfigError, match=match):
        config_from_dict("stage2", data)


def test_bad_json_file(tmp_path):
    (tmp_path / "x.json").write_text("{nope")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_config("stage1", tmp_path / "x.json")


def test_diff_configs_lists_differing_fields_but_not_resumable_ones():
    a = config_to_dict(Stage3Config())
    b = config_to_dict(Stage3Config(steps=5, output_dir="elsewhere", dit_lr=3e-5, retarget="self_attention"))
    b["modules"]["retarget"] = {"width": 64}
    diff = diff_configs(a, b)
    assert diff == ["dit_lr (checkpoint 1e-05, now 3e-05)", "modules.retarget.width (checkpoint absent, now 64)",
                    'retarget (checkpoint "mask_tokens", now "self_attention")']


def test_cli_set_overrides():
    data = _apply_sets({"optim": {"lr": 1}}, ["optim.lr=0.5", "seed=3", "output_dir=runs/x", "data.frames=9"])
    assert data == {"optim": {"lr": 0.5}, "seed": 3, "output_dir": "runs/x", "data": {"frames": 9}}
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        _apply_sets({}, ["nonsense"])


# ---- flow matching ---------------------------------------------------------------------------------------
def test_flow_matching_convention_is_comfyuis():
    s = torch.tensor([0.0, 0.25, 0.5, 1.0])
    shift = 8.0
    assert torch.allclose(shift_sigma(s, shift), shift * s / (1 + (shift - 1) * s))
    assert torch.equal(shift_sigma(s, 1.0), s)
    assert default_shift(48) == 5.0 and default_shift(16) == 8.0
    g = torch.Generator().manual_seed(0)
    sig = sample_sigmas(1000, 5.0, g)
    assert float(sig.min()) > 0 and float(sig.max()) <= 1.0 and float(sig.mean()) > 0.6  # shifted towards noise
    x0, eps = torch.randn(3, 16, 2, 4, 4), torch.randn(3, 16, 2, 4, 4)
    sigma = torch.tensor([0.1, 0.5, 0.9])
    x_t = noisy_latent(x0, eps, sigma)
    assert torch.allclose(x_t[1], 0.5 * x0[1] + 0.5 * eps[1])
    # The regression target eps - x0 is what ComfyUI's sampler turns back into x0 (denoised = x_t - sigma*out).
    assert torch.allclose(denoised_from_output(x_t, eps - x0, sigma), x0, atol=1e-6)


# ---- VQ ---------------------------------------------------------------------------------------------------
def tiny_tokenizer(seed=0):
    torch.manual_seed(seed)
    return MotionTokenizer(MotionTokenizerConfig(width=64, layers=1, heads=1, image_size=64, codebook_size=32))


def test_straight_through_vq_matches_inference_and_trains_encoder_and_codebook():
    tok = tiny_tokenizer()
    frames = torch.rand(3, 48, 64, 3)
    enc = TokenizerEncoder(tok, commitment_cost=0.25)
    tokens, losses, indices = enc(frames)
    ref = tok.encode(preprocess_frames(frames, 64))
    assert torch.equal(indices, ref.indices)
    torch.testing.assert_close(tokens, ref.tokens, rtol=0, atol=1e-6)
    z = F.normalize(tok.encode_latents(preprocess_frames(frames, 64)).float(), dim=-1)
    e = F.normalize(tok.quantize.embedding.weight.float(), dim=-1)[indices]
    expected = F.mse_loss(e, z) * 1.25  # codebook + 0.25 commitment: the same value, different gradients
    torch.testing.assert_close(losses["vq"], expected)
    (tokens.square().sum() + losses["vq"]).backward()
    assert tok.encoder.conv_out.weight.grad.abs().sum() > 0  # straight-through reaches the encoder
    used = tok.quantize.embedding.weight.grad.abs().sum(1) > 0
    assert set(used.nonzero().flatten().tolist()) == set(indices.flatten().tolist())  # only chosen rows move


def test_conv_motion_encoder_tokens_and_file(tmp_path):
    torch.manual_seed(0)
    enc = ConvMotionEncoder(ConvEncoderConfig(image_size=64, channels=(8, 16)))
    tokens, losses, _ = enc(torch.rand(2, 40, 64, 3))
    assert tokens.shape == (2, 32, 12) and losses == {}
    torch.testing.assert_close(tokens.norm(dim=-1), torch.ones(2, 32))
    enc.save(tmp_path / "conv.safetensors")
    back = ConvMotionEncoder.from_file(tmp_path / "conv.safetensors")
    frames = torch.rand(2, 64, 64, 3)
    assert torch.equal(back(frames)[0], enc(frames)[0])


# ---- heatmap targets ----------------------------------------------------------------------------------------
def test_stage1_heatmaps_are_drawn_in_the_padded_square_the_tokenizer_sees():
    h, w = 40, 64  # landscape: 12 rows of padding on top
    xy = torch.tensor([[[10.0, 5.0], [50.0, 30.0]]])
    maps = square_frame_heatmaps(xy, torch.ones(1, 2, dtype=torch.bool), (h, w), (32, 32), sigma=1.0)
    found, _ = heatmap_argmax(maps, in_size=(64, 64))
    torch.testing.assert_close(found, xy + torch.tensor([0.0, 12.0]), atol=0.05, rtol=0)
    # The tokenizer's input has the frame at the same place: a bright pixel lands where the heatmap peaks.
    frame = torch.zeros(1, h, w, 3)
    frame[0, 5, 10] = 1.0
    assert preprocess_frames(frame, 64)[0, 0].argmax() == 17 * 64 + 10


def test_latent_frame_heatmaps_pool_each_latent_frames_pixel_frames():
    t, j = 9, 3
    xy = torch.rand(2, t, j, 2) * 30
    vis = torch.rand(2, t, j) > 0.3
    heat, weight = latent_frame_heatmaps(xy, vis, (32, 32), (16, 16), sigma=1.0)
    assert heat.shape == (2, 3, j, 16, 16) and weight.shape == (2, 3, j)
    per_frame = render_heatmaps(xy.flatten(0, 1), vis.flatten(0, 1), (16, 16), 1.0, (32, 32)).unflatten(0, (2, t))
    assert latent_frame_groups(t) == [(0, 1), (1, 5), (5, 9)]
    torch.testing.assert_close(heat[:, 0], per_frame[:, 0])  # latent 0 = frame 0 alone
    torch.testing.assert_close(heat[:, 2], per_frame[:, 5:9].mean(1))
    torch.testing.assert_close(weight[:, 1], vis[:, 1:5].float().mean(1))


# ---- retarget ablation --------------------------------------------------------------------------------------
def small_modules(kind="mask_tokens"):
    torch.manual_seed(0)
    modules = IMAnimationModules(RetargetConfig(latent_channels=16, width=32, depth=1, heads=2, out_channels=4,
                                                heatmap_channels=8),
                                 __import__("im_animation_core.expression", fromlist=["x"]).ExpressionConfig(
                                     crop_size=32, width=16, tokens=4, base_channels=8),
                                 DiTSpec(dim=128, heads=1, depth=6, latent_channels=16))
    return use_retarget_kind(modules, kind)


def test_self_attention_retarget_reads_reference_positions_without_mask_tokens():
    modules = small_modules("self_attention")
    rt = modules.retarget
    assert isinstance(rt, SelfAttentionRetarget)
    motion, ref = torch.randn(1, 5, 32, 12), torch.randn(1, 16, 4, 6)
    times = torch.tensor([0.0, 2.5])
    out, feats = rt(motion, torch.arange(5.0), ref, times, return_features=True)
    assert out.shape == (1, 4, 2, 4, 6) and feats.shape == (1, 2, 6, 32)
    out.sum().backward()
    assert rt.mask_token.grad is None  # no mask tokens in the sequence
    assert rt.ref_in.weight.grad.abs().sum() > 0
    plain = RetargetTransformer(rt.config)
    plain.load_state_dict(rt.state_dict())
    assert not torch.allclose(plain(motion, torch.arange(5.0), ref, times), out)


def test_ablation_modules_file_remembers_the_retarget_kind(tmp_path):
    for kind in ("mask_tokens", "self_attention"):
        modules = small_modules(kind)
        path = str(tmp_path / f"{kind}.safetensors")
        save_modules(modules, path)
        loaded = load_modules(path)
        assert type(loaded.retarget) is type(modules.retarget)
        if kind == "mask_tokens":
            IMAnimationModules.from_file(path)
        else:  # the node pack's loader refuses the ablation rather than running the wrong forward
            with pytest.raises(CheckpointError, match="ablation"):
                IMAnimationModules.from_file(path)
        args = (torch.randn(1, 5, 32, 12), torch.arange(5.0), torch.randn(1, 16, 4, 4), torch.tensor([0.0, 2.5]))
        with torch.no_grad():
            assert torch.equal(loaded.retarget(*args), modules.retarget(*args))


def test_tokenizer_from_a_titok_pickle(tmp_path):
    from im_animation_core.tokenizer.testing import random_state_dict
    from im_animation_core.train.build import build_tokenizer

    sd = random_state_dict(MotionTokenizerConfig(width=64, layers=1, heads=1, image_size=64, codebook_size=128))
    torch.save({**sd, "decoder.ffn.0.weight": torch.randn(8, 64, 1, 1)}, tmp_path / "tokenizer_titok_l32.bin")
    for size, rows in ((0, 128), (16, 16)):
        cfg = config_from_dict("stage1", {"tokenizer": {"titok_path": str(tmp_path / "tokenizer_titok_l32.bin"),
                                                        "codebook_size": size}})
        tok = build_tokenizer(cfg)
        assert tok.quantize.embedding.weight.shape == (rows, 12)
        assert torch.equal(tok.encoder.conv_out.weight, sd["encoder.conv_out.weight"])
        assert tok.param_dtype == torch.float32


def test_flow_draws_are_per_sample():
    from im_animation_core.train.targets import sample_noise

    s_ab, n_ab = sample_noise(7, [4, 9], (3, 2), 5.0)
    s_b, n_b = sample_noise(7, [9], (3, 2), 5.0)
    assert torch.equal(s_ab[1:], s_b) and torch.equal(n_ab[1:], n_b)  # batch composition does not matter
    s_other, _ = sample_noise(8, [4], (3, 2), 5.0)
    assert not torch.equal(s_other, s_ab[:1])
