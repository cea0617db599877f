"""The exact Wan2.2 TI2V-5B configuration, built through ComfyUI's own Wan model class on the meta device,
patched by the pack: structure and parameter counts. Plus a real CPU forward at the 5B widths with 2 layers."""

import importlib

import pytest
import torch

from tools.fixture_models import tiny_wan_dit_state_dict
from tools.inprocess import PACKAGE, load_pack

WAN22_5B = {"image_model": "wan2.1", "model_type": "t2v", "dim": 3072, "ffn_dim": 14336, "num_heads": 24,
            "num_layers": 30, "in_dim": 48, "out_dim": 48, "patch_size": (1, 2, 2), "freq_dim": 256,
            "window_size": (-1, -1), "qk_norm": True, "cross_attn_norm": True, "eps": 1e-6}


def pack(name):
    return importlib.import_module(f"{PACKAGE}.{name}")


@pytest.fixture(scope="module")
def comfy():
    load_pack()
    import comfy.model_detection
    import comfy.model_patcher

    return comfy


def full_modules(depth=30):
    core = pack("im_animation_core")
    return core.modules.IMAnimationModules(core.retarget.RetargetConfig(latent_channels=48),
                                           core.expression.ExpressionConfig(),
                                           core.modules.DiTSpec(dim=3072, heads=24, depth=depth, latent_channels=48))


def count(module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_patched_wan22_5b_structure_and_parameter_counts(comfy):
    model_config = comfy.model_detection.model_config_from_unet_config(dict(WAN22_5B))
    assert type(model_config).__name__ == "WAN22_T2V"
    with torch.device("meta"):
        base = model_config.get_model({}, device="meta")
        modules = full_modules()
    assert type(base).__name__ == "WAN22"
    dev = torch.device("cpu")
    model = comfy.model_patcher.ModelPatcher(base, load_device=dev, offload_device=dev)
    modules_patcher = comfy.model_patcher.ModelPatcher(modules, load_device=dev, offload_device=dev)
    patched = pack("nodes.wan_patch").apply_im_animation("test", model, modules_patcher)

    embed = patched.object_patches["diffusion_model.patch_embedding"]
    assert type(embed).__name__ == "SharedMotionPatchEmbedding"
    assert tuple(embed.base.weight.shape) == (3072, 48, 1, 2, 2)
    assert tuple(embed.motion_conv.weight.shape) == (3072, 16, 1, 2, 2)
    replaced = patched.model_options["transformer_options"]["patches_replace"]["dit"]
    assert sorted(i for _, i in replaced) == [5, 11, 17, 23, 29]
    assert patched.get_additional_models_with_key("im_animation") == [modules_patcher]
    assert model.object_patches == {}  # the stock MODEL itself is untouched
    assert "process_timestep" not in patched.object_patches  # WAN22 keeps its own clean-reference handling

    dit = count(base.diffusion_model)
    parts = {name: count(getattr(modules, name)) for name in
             ("retarget", "expression_encoder", "expression_blocks", "motion_patch")}
    print(f"\nWan2.2 TI2V-5B DiT: {dit / 1e9:.3f} B parameters; IM-Animation modules: "
          + ", ".join(f"{k} {v / 1e6:.1f} M" for k, v in parts.items()) + f"; total {sum(parts.values()) / 1e6:.1f} M")
    assert 4.9e9 < dit < 5.1e9
    assert len(modules.expression_blocks) == 5
    assert parts["motion_patch"] == 3072 * 16 * 4 + 3072


@pytest.mark.default_host_only  # slow, and the pack's own numerics rather than the host's API: run on v0.33 only
def test_cpu_forward_at_5b_widths_with_two_layers(comfy):
    import comfy.sd

    sd = tiny_wan_dit_state_dict(seed=0, dim=3072, ffn_dim=14336, num_layers=2, in_dim=48, out_dim=48)
    model = comfy.sd.load_diffusion_model_state_dict(sd)
    del sd
    modules = full_modules(depth=2)
    core = pack("im_animation_core")
    patcher = pack("nodes.devices").patcher_for(modules.eval())
    length, h, w = 5, 2, 2  # 2 output latent frames of 2x2 (32x32 pixels)
    rm = core.pipeline.RetargetedMotion(motion=torch.randn(1, 16, 2, h, w), identity_latent=torch.randn(1, 48, 1, h, w),
                                        length=length, width=32, height=32, fps=24.0, modules=patcher)
    out = pack("nodes.sampler").IMAnimationSampler.execute(
        model, rm, seed=0, steps=1, cfg=1.0, sampler_name="euler", scheduler="simple").result[0]["samples"]
    assert out.shape == (1, 48, 2, h, w) and torch.isfinite(out).all()
