"""Widening a trained DiT and the modules at its width (train.dit_widen) keeps what they compute."""

from functools import partial

import pytest
import torch

from im_animation_core.expression import ExpressionConfig
from im_animation_core.modules import DiTSpec, IMAnimationModules
from im_animation_core.retarget import RetargetConfig
from im_animation_core.train.dit_widen import widen_modules, widen_wan_dit
from im_animation_core.wan.config import WanDiTConfig
from im_animation_core.wan.model import WanDiT


def randomised(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Every parameter drawn at random: the zero-initialised outputs (head, motion patch, expression
    projection) would otherwise hide a widening that breaks them."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            # vectors at the hidden width (norm gains among them) around 1, so no gain is near zero
            p.copy_(torch.randn(p.shape, generator=gen) * 0.2 + (1.0 if p.dim() == 1 and p.shape[0] > 40 else 0.0))
    return module


def narrow_pair(seed=0):
    dit = randomised(WanDiT(WanDiTConfig(dim=64, ffn_dim=128, num_heads=1, num_layers=6, in_dim=16, out_dim=16,
                                         text_dim=32)), seed)
    modules = randomised(IMAnimationModules(
        RetargetConfig(latent_channels=16, width=32, depth=1, heads=2, out_channels=4),
        ExpressionConfig(crop_size=32, width=16, tokens=4, base_channels=8),
        DiTSpec(dim=64, heads=1, depth=6, latent_channels=16, clean_reference=True)), seed + 1)
    return dit, modules


def run(dit: WanDiT, modules: IMAnimationModules, inputs: dict) -> torch.Tensor:
    dit.attach_motion_patch(modules.motion_patch)
    hooks = {i: partial(block, expression=inputs["expression"], skip_frames=1)
             for i, block in zip(modules.dit.expression_block_indices, modules.expression_blocks, strict=True)}
    with torch.no_grad():
        return dit(inputs["x"], inputs["t"], inputs["context"], motion=inputs["motion"], block_hooks=hooks)


def inputs(seed=1):
    g = torch.Generator().manual_seed(seed)
    return {"x": torch.randn(2, 16, 3, 4, 4, generator=g),
            "t": torch.tensor([[0.0, 700.0, 700.0], [0.0, 250.0, 250.0]]),  # a clean reference frame, then noised
            "context": torch.randn(2, 3, 32, generator=g), "motion": torch.randn(2, 4, 3, 4, 4, generator=g),
            "expression": torch.randn(2, 2, 4, 16, generator=g)}  # [B, driven frames, tokens, width]


@pytest.mark.parametrize("factor", [2, 3])
def test_the_widened_dit_and_modules_compute_what_the_narrow_ones_did(factor):
    dit, modules = narrow_pair()
    x = inputs()
    before = run(dit, modules, x)
    wide_dit = widen_wan_dit(dit, factor, noise=0.5, seed=7)
    wide_modules = widen_modules(modules, factor, noise=0.5, seed=7)
    c = wide_dit.config
    assert (c.dim, c.ffn_dim, c.num_heads, c.head_dim) == (64 * factor, 128 * factor, factor, 64)
    assert (wide_modules.dit.dim, wide_modules.dit.heads) == (64 * factor, factor)
    after = run(wide_dit, wide_modules, x)
    assert before.abs().mean() > 0.1  # a real output, not a zero head
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-4)
    # the width-free modules are kept as they were
    assert wide_modules.retarget is modules.retarget and wide_modules.expression_encoder is modules.expression_encoder


def test_the_copies_differ_so_training_can_tell_them_apart():
    dit, modules = narrow_pair()
    wide = widen_wan_dit(dit, 2, noise=0.5, seed=3)
    head = wide.head.head.weight  # reads the hidden channels: its two halves must differ but sum to the original
    assert not torch.allclose(head[:, :64], head[:, 64:])
    torch.testing.assert_close(head[:, :64] + head[:, 64:], dit.head.head.weight)
    # a tiny training step moves the two copies of a hidden channel apart
    x = inputs()
    wide_modules = widen_modules(modules, 2, noise=0.5, seed=3)
    wide.attach_motion_patch(wide_modules.motion_patch)
    out = wide(x["x"], x["t"], x["context"], motion=x["motion"])
    out.square().mean().backward()
    grad = wide.blocks[0].ffn[0].weight.grad  # rows 0..127 produce the first copy, 128..255 the second
    assert not torch.allclose(grad[:128], grad[128:], atol=1e-7)


def test_noise_zero_gives_exact_copies_and_a_bad_factor_is_refused():
    dit, modules = narrow_pair()
    wide = widen_wan_dit(dit, 2, noise=0.0)
    torch.testing.assert_close(wide.head.head.weight[:, :64], wide.head.head.weight[:, 64:])
    with pytest.raises(ValueError, match="positive integer"):
        widen_wan_dit(dit, 0)
    with pytest.raises(ValueError, match="positive integer"):
        widen_modules(modules, 1.5)
