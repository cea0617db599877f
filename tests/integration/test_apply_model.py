"""Apply IM-Animation in-process on ComfyUI's own Wan model and samplers (tiny sizes): one stateless patch
per model, shared by its clones, and conditioning that did not come from IM-Animation Conditioning, or came
from other modules, is refused by name instead of failing deep inside the DiT."""

import importlib

import pytest
import torch

from tools.fixture_models import tiny_wan_dit_state_dict
from tools.inprocess import PACKAGE, load_pack


def pack(name):
    return importlib.import_module(f"{PACKAGE}.{name}")


@pytest.fixture(scope="module")
def wan():
    load_pack()
    import comfy.sd

    return comfy.sd.load_diffusion_model_state_dict(tiny_wan_dit_state_dict(seed=0))


def modules(seed: int):
    core = pack("im_animation_core")
    torch.manual_seed(seed)
    m = core.modules.IMAnimationModules(core.retarget.RetargetConfig(latent_channels=16),
                                        core.expression.ExpressionConfig(),
                                        core.modules.DiTSpec(dim=128, heads=1, depth=6, latent_channels=16)).eval()
    with torch.no_grad():  # trained-like: the zero-initialised adapters would hide a wrong wiring
        for p in [*m.motion_patch.parameters(), *m.expression_blocks.parameters()]:
            p.normal_(0, 0.02)
    return pack("nodes.devices").patcher_for(m)


def retargeted(patcher):
    core = pack("im_animation_core")
    return core.pipeline.RetargetedMotion(motion=torch.randn(1, 16, 2, 4, 4),
                                          identity_latent=torch.randn(1, 16, 1, 4, 4),
                                          length=5, width=32, height=32, fps=24.0, modules=patcher)


def expression(patcher, frames=5):
    core = pack("im_animation_core")
    cfg = patcher.model.expression_encoder.config
    return core.pipeline.ExpressionFeatures(tokens=torch.randn(frames, cfg.tokens, cfg.width), modules=patcher)


def sample(model, positive, negative, latent):
    import comfy.sample

    x = latent["samples"]
    return comfy.sample.sample(model, comfy.sample.prepare_noise(x, 0), 2, 1.0, "euler", "simple", positive, negative,
                               x, noise_mask=latent["noise_mask"], disable_pbar=True, seed=0)


def conditioning(patcher, with_expression=True):
    node = pack("nodes.conditioning").IMAnimationConditioning
    expr = expression(patcher) if with_expression else None
    return node.execute(retargeted(patcher), expression=expr).result


def test_one_patch_shared_by_clones_and_reapplying_is_a_no_op(wan):
    apply = pack("nodes.wan_patch").apply_im_animation
    mods = modules(0)
    patched = apply("test", wan, mods)
    again = apply("test", patched, mods)
    assert again.object_patches["diffusion_model.patch_embedding"] is patched.object_patches[
        "diffusion_model.patch_embedding"]
    clone = again.clone()  # what downstream nodes (model sampling, LoRA loaders) do
    block = clone.model_options["transformer_options"]["patches_replace"]["dit"][("double_block", 5)].block
    assert block is mods.model.expression_blocks[0]  # shared with the modules' patcher, not a copy
    with pytest.raises(ValueError, match="already has other IM-Animation modules"):
        apply("test", patched, modules(1))


def test_expression_and_motion_come_from_the_conditioning(wan):
    mods = modules(0)
    patched = pack("nodes.wan_patch").apply_im_animation("test", wan, mods)
    pos, neg, latent, trim, next_offset = conditioning(mods)
    assert trim == 1 and latent["samples"].shape == (1, 16, 3, 4, 4)
    assert next_offset == 5  # the whole 5-frame clip in one chunk: a next chunk would start after it
    with_expr = sample(patched, pos, neg, latent)
    pos2, neg2, *_ = conditioning(mods, with_expression=False)
    without = sample(patched, pos2, neg2, latent)
    assert torch.isfinite(with_expr).all() and not torch.equal(with_expr, without)
    # the same conditioning on the same patched model: the same latents (nothing left over on the patch)
    assert torch.equal(sample(patched, pos, neg, latent), with_expr)


def test_conditioning_without_im_animation_or_from_other_modules_is_refused(wan):
    mods = modules(0)
    patched = pack("nodes.wan_patch").apply_im_animation("test", wan, mods)
    _, _, latent, *_ = conditioning(mods)
    plain = pack("nodes.conditioning").empty_conditioning()
    with pytest.raises(ValueError, match="not made by IM-Animation Conditioning"):
        sample(patched, plain, plain, latent)
    other_pos, other_neg, *_ = conditioning(modules(1))
    with pytest.raises(ValueError, match="other IM-Animation modules"):
        sample(patched, other_pos, other_neg, latent)
    # the same file loaded twice is the same modules
    twin_pos, twin_neg, *_ = conditioning(modules(0))
    assert torch.isfinite(sample(patched, twin_pos, twin_neg, latent)).all()
