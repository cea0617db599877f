"""A tiny, random-weight model set in the real file formats, made by code (nothing is committed).

``write_fixture_models(models_dir)`` writes:
    diffusion_models/ima_tiny_wan.safetensors   Wan DiT (dim 128, 6 layers, 16 channels): stock UNETLoader
    vae/ima_tiny_wan21_vae.safetensors          Wan2.1-architecture VAE (dim 8): stock VAELoader
    im_animation/ima_tiny_motion_tokenizer.safetensors  motion encoder, released key names, small size
    im_animation/ima_tiny_modules.safetensors   retarget + expression + DiT adapters, recording the tokenizer above
                                                as the one they were trained with (as the trainer does)
The DiT and VAE are built with ComfyUI's own classes (this file is test support, not im_animation_core).
"""

from pathlib import Path

import torch
from safetensors.torch import save_file

from .comfy_path import import_comfyui

DIT_NAME = "ima_tiny_wan.safetensors"
VAE_NAME = "ima_tiny_wan21_vae.safetensors"
TOKENIZER_NAME = "ima_tiny_motion_tokenizer.safetensors"
MODULES_NAME = "ima_tiny_modules.safetensors"
HEATMAP_HEAD_NAME = "ima_tiny_heatmap_head.safetensors"
DIT = dict(dim=128, ffn_dim=256, num_layers=6, in_dim=16, out_dim=16, text_dim=4096)


def _init_(module: torch.nn.Module, generator: torch.Generator) -> None:
    """Deterministic init for modules built with ComfyUI's no-init ops: weights ~ N(0, 1/fan_in), norms 1,
    biases 0, so activations stay in range through the random network."""
    for name, p in module.named_parameters():
        with torch.no_grad():
            leaf = name.rsplit(".", 1)[-1]
            if p.ndim >= 2 and leaf == "weight":
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=generator) / fan_in**0.5)
            elif leaf in ("gamma",) or (leaf == "weight" and p.ndim == 1):
                p.fill_(1.0)
            elif leaf == "bias":
                p.zero_()
            else:  # e.g. Wan's modulation tables
                p.copy_(torch.randn(p.shape, generator=generator) * 0.02)


def tiny_wan_dit_state_dict(seed: int = 0, **overrides) -> dict:
    import_comfyui()
    import comfy.ldm.wan.model
    import comfy.ops

    cfg = dict(DIT, **overrides)
    model = comfy.ldm.wan.model.WanModel(model_type="t2v", num_heads=cfg["dim"] // 128,
                                         operations=comfy.ops.manual_cast, **cfg)
    _init_(model, torch.Generator().manual_seed(seed))
    return {k: v.contiguous() for k, v in model.state_dict().items()}


def tiny_wan21_vae_state_dict(seed: int = 0, dim: int = 8) -> dict:
    import_comfyui()
    import comfy.ldm.wan.vae

    vae = comfy.ldm.wan.vae.WanVAE(dim=dim, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
                                   temperal_downsample=[False, True, True], image_channels=3, dropout=0.0)
    _init_(vae, torch.Generator().manual_seed(seed))
    return {k: v.contiguous() for k, v in vae.state_dict().items()}


def tiny_modules(seed: int = 0, zero_adapters: bool = False, latent_channels: int = 16, dim: int = DIT["dim"],
                 depth: int = DIT["num_layers"]):
    """IM-Animation modules sized for the tiny DiT. With zero_adapters=False the zero-initialised adapter
    outputs get random values too, so that motion and expression visibly change the fixture's output."""
    from im_animation_core.expression import ExpressionConfig
    from im_animation_core.modules import DiTSpec, IMAnimationModules
    from im_animation_core.retarget import RetargetConfig

    torch.manual_seed(seed)
    modules = IMAnimationModules(
        RetargetConfig(latent_channels=latent_channels, width=64, depth=2, heads=2, out_channels=8),
        ExpressionConfig(crop_size=32, width=32, tokens=4, base_channels=8),
        DiTSpec(dim=dim, heads=dim // 128, depth=depth, latent_channels=latent_channels),
    )
    if not zero_adapters:
        with torch.no_grad():
            modules.motion_patch.weight.normal_(0, 0.2)
            for block in modules.expression_blocks:
                block.attn.out.weight.normal_(0, 0.05)
    return modules


def tiny_motion_tokenizer(seed: int = 0):
    from im_animation_core.tokenizer import MotionTokenizer, MotionTokenizerConfig

    torch.manual_seed(seed)
    return MotionTokenizer(MotionTokenizerConfig(width=64, layers=2, heads=1, codebook_size=256))


def tiny_heatmap_head(seed: int = 0):
    from im_animation_core.heatmap_head import HeatmapHead, HeatmapHeadConfig, JointDecoderConfig, MotionDecoderConfig

    torch.manual_seed(seed)
    return HeatmapHead(HeatmapHeadConfig(MotionDecoderConfig(width=64, depth=1),
                                         JointDecoderConfig(width=64, channels=(16, 8, 8))))


def write_fixture_models(models_dir, seed: int = 0, zero_adapters: bool = False, names: dict | None = None) -> dict:
    """Write the tiny model set under models_dir (ComfyUI's models/ layout). Returns {kind: file name}.
    ``names`` renames the files (e.g. tools.demo_set.DEMO_NAMES, the names the demo workflow asks for)."""
    names = names or {"dit": DIT_NAME, "vae": VAE_NAME, "tokenizer": TOKENIZER_NAME, "modules": MODULES_NAME}
    models_dir = Path(models_dir)
    for sub in ("diffusion_models", "vae", "im_animation"):
        (models_dir / sub).mkdir(parents=True, exist_ok=True)
    save_file(tiny_wan_dit_state_dict(seed), str(models_dir / "diffusion_models" / names["dit"]))
    save_file(tiny_wan21_vae_state_dict(seed), str(models_dir / "vae" / names["vae"]))
    tokenizer = models_dir / "im_animation" / names["tokenizer"]
    tiny_motion_tokenizer(seed).save(str(tokenizer))
    modules = tiny_modules(seed, zero_adapters)
    from im_animation_core.motion import TokenizerRecord

    modules.tokenizer_record = TokenizerRecord.of_file(tokenizer)
    modules.save(str(models_dir / "im_animation" / names["modules"]))
    tiny_heatmap_head(seed).save(str(models_dir / "im_animation" / HEATMAP_HEAD_NAME))
    return dict(names)
