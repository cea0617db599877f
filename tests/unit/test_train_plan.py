"""The Stage-3 memory plan (python -m im_animation_core.train plan): parameter counts of the models built on
the meta device, how the per-rank bytes scale with the GPU count and the batch, the command line, and the
activation formulas against what autograd actually keeps for tiny blocks in bfloat16 on the CPU."""

import json
from pathlib import Path

import pytest
import torch

from im_animation_core.expression import ExpressionBlock
from im_animation_core.layers import TransformerBlock
from im_animation_core.tokenizer.model import ResidualAttentionBlock
from im_animation_core.train import plan_activations as act
from im_animation_core.train.__main__ import main
from im_animation_core.train.config import config_from_dict
from im_animation_core.train.plan import GIB, PlanOptions, memory_plan
from im_animation_core.train.recipe import recipe_phase_config
from im_animation_core.wan.config import WanDiTConfig
from im_animation_core.wan.model import TokenGroups, WanBlock, rope_tables

RECIPE = Path(__file__).resolve().parents[2] / "configs" / "paper.json"
CONFIG = ["--recipe", str(RECIPE), "--phase", "stage3_5b"]  # the paper's Stage 3 on Wan2.2 TI2V-5B
TI2V_5B_PARAMS = 4_999_787_712  # what tests/unit/test_wan_dit.py::test_5b_preset_and_parameter_count measures

pytestmark = pytest.mark.usefixtures("one_thread")


def load_paper_5b():
    return config_from_dict("stage3", recipe_phase_config(RECIPE, "stage3_5b")[1])


@pytest.fixture(scope="module")
def config():
    return load_paper_5b()


@pytest.fixture(scope="module")
def plans(config):
    return {n: memory_plan(config, PlanOptions(gpus=n)) for n in (1, 2, 16)}


def test_paper_config_parameters_and_grid(plans):
    plan = plans[16]
    params = {p.name: p.params for p in plan.parts}
    assert params["dit"] == TI2V_5B_PARAMS
    assert all(p.trainable for p in plan.parts)  # the paper's Stage 3 trains everything, end to end
    assert plan.trainable_params == sum(params.values()) and plan.frozen_params == 0
    assert next(plan.parts[0].module.parameters()).is_meta
    assert plan.latent == (21, 44, 80)
    assert plan.dit_tokens == 22 * 22 * 40  # the identity frame + 21 latent frames of 22 x 40 patches
    assert plan.vae_params > 0  # the Wan2.2 VAE encodes the clips in the step (no data.cache)


def test_sharded_bytes_divide_by_gpus_and_the_rest_does_not(plans):
    one = plans[1].static_bytes()
    p = plans[1].trainable_params
    assert (one["parameters"], one["gradients"], one["optimizer"]) == (4 * p, 4 * p, 8 * p)
    for n, plan in plans.items():
        s = plan.static_bytes()
        for key in ("parameters", "gradients", "optimizer"):
            assert s[key] * n == pytest.approx(one[key], rel=1e-12)
        assert (s["fsdp_buffers"], s["vae"]) == (one["fsdp_buffers"], one["vae"])
        assert plan.activation_bytes(True) == plans[1].activation_bytes(True)
    assert plans[16].total_bytes(True) < plans[2].total_bytes(True) < plans[1].total_bytes(True)


def test_checkpointing_and_batch(config, plans):
    plan = plans[16]
    assert plan.activations_checkpointed["dit_blocks"].bytes < plan.activations["dit_blocks"].bytes / 10
    assert plan.fits(True) and not plan.fits(False)  # 80 GiB: only with per-block checkpointing
    assert not memory_plan(config, PlanOptions(gpus=1)).fits(True)  # 5.5 B trained parameters: 88 GB of state
    config2 = load_paper_5b()
    config2.batch_size = 2
    double = memory_plan(config2, PlanOptions(gpus=16))
    assert double.activation_bytes(False) == 2 * plan.activation_bytes(False)
    assert double.flops == 2 * plan.flops
    assert double.static_bytes() == plan.static_bytes()


def test_frozen_parts_and_cached_clips():
    config = load_paper_5b()
    config.tokenizer.trainable = False
    config.retarget_trainable = False
    config.data.cache = "runs/cache"
    plan = memory_plan(config, PlanOptions(gpus=4))
    params = {p.name: p.params for p in plan.parts}
    assert plan.frozen_params == params["tokenizer"] + params["retarget"]
    assert plan.static_bytes()["parameters"] == (4 * plan.trainable_params + 2 * plan.frozen_params) / 4
    assert plan.static_bytes()["optimizer"] == 8 * plan.trainable_params / 4
    assert set(plan.activations) == {"dit_blocks", "dit_outer", "expression_blocks"}  # frozen: no activations
    assert plan.vae_params == 0  # the clip cache holds the latents


def test_time_estimate(plans):
    plan = plans[16]
    # 30 DiT blocks of 19360 tokens dominate: about 10.35 TFLOP forward each, x4 with checkpointing
    assert 1.2e15 < plan.flops < 1.5e15
    expected = 1000 * plan.flops / (989e12 * 0.35) / 3600
    assert plan.hours_per_1k_steps() == pytest.approx(expected)


def test_command_line(capsys, tmp_path):
    assert main(["plan", *CONFIG, "--gpus", "16"]) == 0
    out = capsys.readouterr().out
    assert "latent 21 x 44 x 80" in out and "19360 DiT tokens" in out and "4,999,787,712" in out
    assert "NO  without checkpointing, yes with per-block checkpointing" in out
    assert "estimate, not a measurement" in out
    assert main(["plan", *CONFIG, "--gpus", "16", "--gpu-memory", "24", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["params"]["dit"]["count"] == TI2V_5B_PARAMS and not data["fits_checkpointed"]
    assert data["budget_bytes"] == pytest.approx(24 * GIB * 0.9)
    assert data["bytes"]["gradients"] == pytest.approx(4 * data["trainable_params"] / 16)


@pytest.mark.parametrize(("args", "message"), [
    ([], "--gpus"),
    (["--gpus", "0"], "--gpus"),
    (["--gpus", "2", "--frames", "80"], "--frames"),
    (["--gpus", "2", "--width", "1000"], "--width"),
    (["--gpus", "2", "--set", "dit_draws=0"], "dit_draws"),
])
def test_command_line_errors(capsys, args, message):
    assert main(["plan", *CONFIG, *args]) == 2
    assert message in capsys.readouterr().err


# ---- the activation formulas against autograd on the CPU ----------------------------------------------------
def saved_bytes(module, fn) -> dict[str, int]:
    """Bytes of the tensors autograd saves while fn runs, by dtype; parameters left out, shared storage once."""
    params = {p.untyped_storage().data_ptr() for p in module.parameters()}
    seen = {}

    def pack(t):
        ptr = t.untyped_storage().data_ptr()
        if ptr not in params:
            seen[ptr] = (t.untyped_storage().nbytes(), t.dtype)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    out = {"bf16": 0, "fp32": 0}
    for nbytes, dtype in seen.values():
        out["bf16" if dtype == torch.bfloat16 else "fp32"] += nbytes
    return out


def bf16_module(module):
    module = module.to(torch.bfloat16)
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0, 0.05)
    return module


def per_token_slope(measure, token_counts):
    """Saved bytes per added token between two token counts (terms that do not grow with N cancel)."""
    (n0, a), (n1, b) = ((n, measure(n)) for n in token_counts)
    return {k: (b[k] - a[k]) / (n1 - n0) for k in a}


def test_wan_block_formula_matches_autograd():
    dim, ffn, heads, text, frames = 256, 512, 2, 7, 3
    c = WanDiTConfig(dim=dim, ffn_dim=ffn, num_heads=heads, num_layers=1, in_dim=4, out_dim=4, text_dim=32)
    block = bf16_module(WanBlock(c))
    g = torch.Generator().manual_seed(0)

    def measure(n):
        h, w = 2, n // (2 * frames)
        x = torch.randn(1, n, dim, generator=g).bfloat16().requires_grad_()
        e0 = torch.randn(1, frames, 6, dim, generator=g).bfloat16()
        ctx = torch.randn(1, text, dim, generator=g).bfloat16()
        cos, sin = rope_tables((frames, h, w), c.rope_axes)
        return saved_bytes(block, lambda: block(x, e0, ctx, cos, sin, TokenGroups(frames, n)))

    slope = per_token_slope(measure, (frames * 2 * 2, frames * 2 * 6))
    f0, f1 = (act.wan_block(n, dim, ffn, heads, text) for n in (1, 2))
    # bf16: exactly the formula's token tensors, plus the CPU LayerNorms' statistics (3 x mean and rstd), which
    # the CPU keeps in bf16 and a GPU in float32
    assert slope["bf16"] == 2 * (f1.bf16 - f0.bf16) + 2 * 6
    # float32: the CPU's composite RMSNorm keeps two float32 copies of each q/k norm input where the formula
    # counts one bf16 copy (a fused kernel); plus rstd, log-sum-exp, and the RoPE tables the blocks share
    head_dim = dim // heads
    assert f1.qk_norm_inputs - f0.qk_norm_inputs == 3 * dim
    assert slope["fp32"] == 4 * (2 * 3 * dim + 3 + 2 * heads + head_dim)
    assert act.dit_outer(1, dim, head_dim).fp32 == 2 + head_dim


@pytest.mark.parametrize("kind", ["retarget", "tokenizer"])
def test_preln_block_formula_matches_autograd(kind):
    width, heads = 128, 2
    block = bf16_module(TransformerBlock(width, heads) if kind == "retarget" else
                        ResidualAttentionBlock(width, heads, 4))

    def measure(n):
        x = torch.randn(1, n, width).bfloat16().requires_grad_()
        return saved_bytes(block, lambda: block(x))

    slope = per_token_slope(measure, (16, 40))
    f0, f1 = (act.preln_block(n, width, 4 * width, heads) for n in (1, 2))
    assert slope["bf16"] == 2 * (f1.bf16 - f0.bf16) + 2 * 4  # + the CPU LayerNorm statistics, bf16 here
    assert slope["fp32"] == 4 * heads  # the log-sum-exp; the formula's 4 N LayerNorm floats are bf16 on the CPU


def test_expression_block_formula_matches_autograd():
    dim, heads, width, tokens, frames = 128, 2, 64, 16, 5
    block = bf16_module(ExpressionBlock(dim, heads, width))

    def measure(per_frame):
        x = torch.randn(1, frames * per_frame, dim).bfloat16().requires_grad_()
        ex = torch.randn(frames - 1, tokens, width).bfloat16()
        return saved_bytes(block, lambda: block(x, ex, skip_frames=1))

    got = measure(8)
    want = act.expression_block(frames * 8, (frames - 1) * 8, dim, heads, frames - 1, tokens, width)
    cpu_layernorm_stats = 2 * (frames - 1) * 8  # bf16 on the CPU, float32 in the formula
    assert got["bf16"] == 2 * (want.bf16 + cpu_layernorm_stats)
    assert got["fp32"] == 4 * (want.fp32 - 2 * (frames - 1) * 8)
