"""The trainable Wan DiT (im_animation_core.wan) against ComfyUI's own WanModel: same keys and shapes, same
outputs on the same weights (scalar, per-frame and uneven per-token timesteps), files that the stock
loader reads (widened patch embedding included); gradients, checkpointing, hooks, errors."""

import functools
import subprocess
import sys

import pytest
import torch

from im_animation_core.errors import CheckpointError, InputError
from im_animation_core.expression import ExpressionBlock
from im_animation_core.wan import (
    WanDiT,
    WanDiTConfig,
    count_parameters,
    file_metadata,
    load_wan_dit,
    load_wan_state_dict,
    save_wan_state_dict,
    wan_dit_on_meta,
)
from tools.comfy_path import REPO, import_comfyui

TINY16 = dict(dim=128, ffn_dim=256, num_layers=2, in_dim=16, out_dim=16)  # Wan2.1-family channels, 1 head
TINY48 = dict(dim=256, ffn_dim=512, num_layers=3, in_dim=48, out_dim=48)  # Wan2.2 channels, 2 heads
REL_TOL = 1e-5


@pytest.fixture(scope="module")
def comfy():
    import_comfyui()
    import comfy.ldm.wan.model
    import comfy.model_base
    import comfy.model_detection
    import comfy.model_management  # noqa: F401  (after args.cpu is set)
    import comfy.ops
    import comfy.sd

    return comfy


def comfy_wan(comfy, seed=0, **cfg):
    """ComfyUI's WanModel (t2v) with random weights of sane scale: matrices N(0, 1/fan_in), norm gains
    1 + N(0, 0.1), biases N(0, 0.1), modulation tables N(0, 0.3) (so every gate and shift matters)."""
    model = comfy.ldm.wan.model.WanModel(model_type="t2v", num_heads=cfg["dim"] // 128, text_dim=4096,
                                         operations=comfy.ops.manual_cast, **cfg)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            if p.ndim >= 2 and name.endswith("weight"):
                p.copy_(noise / p[0].numel() ** 0.5)
            elif name.endswith("modulation"):
                p.copy_(noise * 0.3)
            elif "norm" in name and name.endswith("weight"):
                p.copy_(1 + noise * 0.1)
            else:
                p.copy_(noise * 0.1)
    return model.eval()


def randomize_(model: torch.nn.Module, seed=0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (0.3 if p.ndim < 2 else p[0].numel() ** -0.5))


def rel_err(out, ref):
    return ((out - ref).abs().max() / ref.abs().max()).item()


def test_5b_preset_and_parameter_count():
    c = WanDiTConfig.ti2v_5b()
    assert (c.dim, c.ffn_dim, c.num_heads, c.num_layers, c.in_dim, c.out_dim, c.text_dim) == (
        3072, 14336, 24, 30, 48, 48, 4096)
    assert c.head_dim == 128 and c.rope_axes == (44, 42, 42) and c.stock_loader_problems() == []
    model = wan_dit_on_meta(c)
    assert count_parameters(model) == 4_999_787_712  # "5B"
    assert next(model.parameters()).is_meta
    assert WanDiTConfig.from_state_dict(model.state_dict()) == c  # meta tensors: shapes only
    assert count_parameters(wan_dit_on_meta(c, motion_channels=16)) == 4_999_787_712 + 16 * 4 * 3072 + 3072


@pytest.mark.parametrize("cfg", [TINY16, TINY48], ids=["in16", "in48"])
def test_state_dict_keys_shapes_and_detection_equal_comfyui(comfy, cfg):
    ours = WanDiT(WanDiTConfig(**cfg)).state_dict()
    theirs = comfy_wan(comfy, **cfg).state_dict()
    assert list(ours) == list(theirs)  # same keys, same order
    assert {k: tuple(v.shape) for k, v in ours.items()} == {k: tuple(v.shape) for k, v in theirs.items()}
    detected = comfy.model_detection.detect_unet_config(ours, "")
    c = WanDiTConfig.from_state_dict(theirs)
    assert detected["model_type"] == "t2v"
    assert (detected["dim"], detected["ffn_dim"], detected["num_heads"], detected["num_layers"],
            detected["in_dim"], detected["out_dim"]) == (c.dim, c.ffn_dim, c.num_heads, c.num_layers, c.in_dim,
                                                         c.out_dim)
    assert c == WanDiTConfig(**cfg)
    prefixed = {f"model.diffusion_model.{k}": v for k, v in theirs.items()} | {"first_stage_model.x": torch.ones(1)}
    assert WanDiTConfig.from_state_dict(prefixed) == c


@pytest.mark.parametrize("timesteps", ["scalar", "per_frame", "uneven_per_token"])
@pytest.mark.parametrize("cfg", [TINY16, TINY48], ids=["in16", "in48"])
def test_forward_matches_comfyui_wanmodel(comfy, cfg, timesteps):
    theirs = comfy_wan(comfy, seed=1, **cfg)
    ours = WanDiT.from_state_dict(theirs.state_dict()).eval()
    g = torch.Generator().manual_seed(2)
    b, f, h, w = 2, 3, 5, 6  # odd height: exercises the circular padding to the 2x2 patch and the crop
    x = torch.randn(b, cfg["in_dim"], f, h, w, generator=g)
    context = torch.randn(b, 7, 4096, generator=g)
    t = torch.tensor([937.5, 120.0])
    if timesteps == "per_frame":  # what ComfyUI's WAN22 derives from a TI2V noise mask (clean first frame)
        mask = torch.ones(b, 1, f, h, w)
        mask[:, :, 0] = 0
        t = comfy.model_base.WAN22.process_timestep(None, t, x, denoise_mask=mask)
        assert t.shape == (b, f) and (t[:, 0] == 0).all()
    elif timesteps == "uneven_per_token":  # 5 rows over 3*3*3 = 27 tokens: ComfyUI's repeat-and-cut rule
        t = torch.rand(b, 5, generator=g) * 1000
    with torch.no_grad():
        ref = theirs(x, t, context)
        out = ours(x, t, context)
    assert out.shape == ref.shape == (b, cfg["out_dim"], f, h, w)
    assert rel_err(out, ref) < REL_TOL, (out - ref).abs().max()


def test_backward_reaches_every_parameter_and_checkpointing_keeps_gradients():
    torch.manual_seed(0)
    model = WanDiT(WanDiTConfig(**TINY16, text_dim=32), motion_channels=4)
    randomize_(model)
    expression = ExpressionBlock(128, 1, 8)
    randomize_(expression, seed=1)
    x, motion = torch.randn(2, 16, 2, 4, 4), torch.randn(2, 4, 2, 4, 4)
    t, context = torch.tensor([[0.0, 700.0], [0.0, 300.0]]), torch.randn(2, 5, 32)
    hooks = {0: functools.partial(expression, expression=torch.randn(1, 3, 8), skip_frames=1)}  # frame 1 only

    def grads():
        model.zero_grad()
        expression.zero_grad()
        out = model(x, t, context, motion=motion, block_hooks=hooks)
        out.square().mean().backward()
        return {n: p.grad.clone() for n, p in [*model.named_parameters(), *expression.named_parameters()]}

    plain = grads()
    dead = [n for n, gr in plain.items() if gr is None or not torch.isfinite(gr).all() or gr.abs().sum() == 0]
    assert not dead, dead
    assert len(plain) == len(list(model.parameters())) + len(list(expression.parameters()))
    calls = []
    model.blocks[1].register_forward_pre_hook(lambda *_: calls.append(1))
    model.set_gradient_checkpointing([1])
    assert model.checkpoint_blocks == {1}
    grads()
    assert len(calls) == 2  # forward, then its recomputation in backward
    model.set_gradient_checkpointing(True)
    for name, gr in grads().items():
        torch.testing.assert_close(gr, plain[name], rtol=1e-5, atol=1e-7, msg=name)


def test_an_empty_text_context_gives_the_same_output_at_any_length():
    """Stage 3's text_len: with no text the context is all zeros, every key and value of the cross-attention is
    the same vector, so 1 token computes what 512 do (the demo config uses 1: a faster step)."""
    torch.manual_seed(0)
    model = WanDiT(WanDiTConfig(**TINY16, text_dim=32))
    randomize_(model)
    x, t = torch.randn(2, 16, 2, 4, 4), torch.tensor([900.0, 200.0])
    with torch.no_grad():
        long, short = model(x, t, torch.zeros(2, 512, 32)), model(x, t, torch.zeros(2, 1, 32))
        text = model(x, t, torch.randn(2, 512, 32))
    torch.testing.assert_close(short, long, rtol=1e-5, atol=1e-5)
    assert (text - long).abs().max() > 1e-3  # the context does reach the output


def test_widened_export_loads_in_stock_loader_and_round_trips(comfy, tmp_path):
    cfg = WanDiTConfig(**TINY48)
    model = WanDiT(cfg, motion_channels=4)
    randomize_(model, seed=3)
    path = tmp_path / "ima_wan.safetensors"
    save_wan_state_dict(model, path, widened_motion_channels=4)
    assert load_wan_state_dict(path)["patch_embedding.weight"].shape == (256, 52, 1, 2, 2)
    assert file_metadata(path)["latent_channels"] == 48 and file_metadata(path)["motion_channels"] == 4

    patcher = comfy.sd.load_diffusion_model(str(path))  # what the stock "Load Diffusion Model" node does
    assert isinstance(patcher.model, comfy.model_base.WAN22)
    stock = patcher.model.diffusion_model
    assert stock.patch_embedding.weight.shape[1] == 52 and len(stock.blocks) == 3 and stock.num_heads == 2

    g = torch.Generator().manual_seed(4)
    x, motion = torch.randn(1, 48, 2, 4, 6, generator=g), torch.randn(1, 4, 2, 4, 6, generator=g)
    t, context = torch.tensor([[0.0, 640.0]]), torch.randn(1, 6, 4096, generator=g)
    with torch.no_grad():
        ref = stock(torch.cat([x, motion], 1), t, context)
        out = model(x, t, context, motion=motion)
        assert rel_err(out, ref) < REL_TOL
        assert rel_err(model(x, t, context), stock(torch.cat([x, 0 * motion], 1), t, context)) < REL_TOL

        reloaded = load_wan_dit(path)  # the metadata says 48 latent channels: split back into the motion patch
        assert reloaded.config.in_dim == 48 and reloaded.motion_channels == 4
        assert rel_err(reloaded(x, t, context, motion=motion), ref) < REL_TOL
        widened = WanDiT.from_state_dict(stock.state_dict())  # and the stock model's weights load as they are
        assert widened.config.in_dim == 52 and widened.motion_channels == 0
        assert rel_err(widened(torch.cat([x, motion], 1), t, context), ref) < REL_TOL

    base = tmp_path / "base.safetensors"
    written = save_wan_state_dict(model, base, dtype=torch.bfloat16)
    assert written.keys() == WanDiT(cfg).state_dict().keys() and written["head.head.weight"].dtype == torch.bfloat16
    assert load_wan_dit(base).motion_channels == 0
    with pytest.raises(ValueError, match="stock loader"):
        save_wan_state_dict(WanDiT(WanDiTConfig(**TINY16, text_dim=32)), tmp_path / "x.safetensors")


def test_block_hooks_run_after_their_block_with_frame_major_tokens():
    model = WanDiT(WanDiTConfig(**TINY16, text_dim=32))
    randomize_(model)
    x, t, context = torch.randn(1, 16, 3, 4, 6), torch.tensor([500.0]), torch.randn(1, 4, 32)
    seen = []

    def spy(tokens):
        seen.append(tuple(tokens.shape))
        return tokens

    with torch.no_grad():
        base = model(x, t, context)
        assert torch.equal(model(x, t, context, block_hooks={1: [spy, spy]}), base)
        assert seen == [(1, 3 * 2 * 3, 128)] * 2
        untrained = ExpressionBlock(128, 1, 8)  # zero-initialised output: the base model unchanged
        expr = torch.randn(2, 4, 8)
        hook = {0: functools.partial(untrained, expression=expr, skip_frames=1)}
        assert torch.equal(model(x, t, context, block_hooks=hook), base)
        torch.nn.init.normal_(untrained.attn.out.weight)
        assert not torch.allclose(model(x, t, context, block_hooks=hook), base)
    with pytest.raises(ValueError, match="block hook at index 2"):
        model(x, t, context, block_hooks={2: spy})


def test_bfloat16_and_autocast_stay_close_to_float32():
    model = WanDiT(WanDiTConfig(**TINY16, text_dim=32), motion_channels=4)
    randomize_(model, seed=5)
    x, motion = torch.randn(1, 16, 2, 4, 4), torch.randn(1, 4, 2, 4, 4)
    t, context = torch.tensor([[0.0, 400.0]]), torch.randn(1, 3, 32)
    with torch.no_grad():
        ref = model(x, t, context, motion=motion)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert rel_err(model(x, t, context, motion=motion).float(), ref) < 3e-2
        half = model.to(torch.bfloat16)(x, t, context, motion=motion)
    assert half.dtype == torch.bfloat16 and rel_err(half.float(), ref) < 3e-2


def test_bad_inputs_and_files_are_refused(tmp_path):
    model = WanDiT(WanDiTConfig(**TINY16, text_dim=32))
    x, t, context = torch.randn(1, 16, 1, 4, 4), torch.tensor([1.0]), torch.randn(1, 3, 32)
    with pytest.raises(InputError, match=r"x \[B,16"):
        model(torch.randn(1, 20, 1, 4, 4), t, context)
    with pytest.raises(InputError, match="no motion patch"):
        model(x, t, context, motion=torch.randn(1, 4, 1, 4, 4))
    with pytest.raises(InputError, match="timesteps"):
        model(x, torch.ones(2), context)
    with pytest.raises(CheckpointError, match="not a Wan DiT"):
        WanDiTConfig.from_state_dict({"decoder.middle.0.residual.0.gamma": torch.ones(1)})
    sd = model.state_dict() | {"img_emb.proj.0.bias": torch.ones(1)}
    with pytest.raises(CheckpointError, match="image-to-video"):
        WanDiT.from_state_dict(sd)
    (tmp_path / "broken.safetensors").write_bytes(b"not a file")
    with pytest.raises(CheckpointError, match="cannot read"):
        load_wan_state_dict(tmp_path / "broken.safetensors")
    with pytest.raises(ValueError, match="multiple of 128"):
        WanDiTConfig(dim=96, ffn_dim=64, num_layers=1, in_dim=4, out_dim=4)


def test_package_never_imports_comfyui():
    code = ("import sys, im_animation_core.wan as w; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('comfy', 'folder_paths', 'nodes', 'comfy_api')]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=120)
