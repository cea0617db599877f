"""Stage 3 at tiny size: the loss falls on a fixed batch; the DiT gets what ComfyUI's sampler gives it (identity
latent as frame 0, clean with timestep 0 on 48-channel models, noised at the same sigma on 16-channel ones,
zero motion and no expression there); expression tokens equal the inference path's; the DiT file loads as a
Wan DiT (stock-loader sizes) and the modules file carries the matching DiT spec."""

import pytest
import torch

from im_animation_core.data import SyntheticPairs, collate_pairs
from im_animation_core.frames import pool_to_latent_frames
from im_animation_core.modules import IMAnimationModules
from im_animation_core.pipeline import encode_expression
from im_animation_core.train import Trainer, config_from_dict
from im_animation_core.train.presets import tiny_config_dict, tiny_vae
from im_animation_core.train.targets import noisy_latent, sample_noise
from im_animation_core.wan import WanDiTConfig, load_wan_dit, load_wan_state_dict, save_wan_state_dict
from im_animation_core.wan.latent_format import latent_format_for

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def items():
    return [SyntheticPairs("train", 2, frames=5, size=64, seed=11)[i] for i in range(2)]


def test_stage3_loss_falls_and_outputs_load(tmp_path, items):
    batch = collate_pairs(items)
    cfg = config_from_dict("stage3", tiny_config_dict("stage3", tmp_path / "s3", steps=15, save_every=100,
                                                      optim={"lr": 2e-3}, dit_lr=2e-3))
    trainer = Trainer("stage3", cfg, dataset=items, vae=tiny_vae())
    before = [trainer.evaluate(batch, seed_step=s) for s in (1, 2, 3)]
    trainer.train()
    after = [trainer.evaluate(batch, seed_step=s) for s in (1, 2, 3)]
    mean = lambda runs, k: sum(r[k] for r in runs) / len(runs)  # noqa: E731
    assert mean(after, "dit") < 0.8 * mean(before, "dit"), (before, after)
    assert mean(after, "retarget") < 0.6 * mean(before, "retarget"), (before, after)
    assert mean(after, "loss") < 0.7 * mean(before, "loss"), (before, after)

    out = tmp_path / "s3"
    dit = trainer.model.dit
    sd = load_wan_state_dict(out / "wan_dit.safetensors")
    assert not any(k.startswith("motion_patch") for k in sd)  # base DiT, Wan keys only
    file_cfg = WanDiTConfig.from_state_dict(sd)
    assert file_cfg.stock_loader_problems() == [] and file_cfg.in_dim == 16
    loaded = load_wan_dit(out / "wan_dit.safetensors")
    modules = IMAnimationModules.from_file(str(out / "im_animation_modules.safetensors"))
    assert (modules.dit.dim, modules.dit.heads, modules.dit.depth, modules.dit.latent_channels) == (
        file_cfg.dim, file_cfg.num_heads, file_cfg.num_layers, 16)
    # The exported pair computes what the trained model computes (motion through the modules' patch).
    loaded.attach_motion_patch(modules.motion_patch)
    x, motion = torch.randn(1, 16, 3, 8, 8), torch.randn(1, 4, 3, 8, 8)
    ctx, t = torch.zeros(1, 512, 4096), torch.tensor([500.0])
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, t, ctx, motion=motion), dit(x, t, ctx, motion=motion))


def capture_dit_inputs(model):
    seen = {}

    def hook(module, args, kwargs):
        seen.update(x=args[0].detach().clone(), t=args[1].detach().clone(), motion=kwargs["motion"].detach().clone(),
                    hooks=kwargs["block_hooks"])

    return seen, model.dit.register_forward_pre_hook(hook, with_kwargs=True)


@pytest.mark.parametrize("channels", [48, 16])
def test_dit_inputs_mirror_comfyuis_sampler(tmp_path, items, channels):
    dit = {"in_dim": channels, "out_dim": channels}
    cfg = config_from_dict("stage3", tiny_config_dict("stage3", tmp_path / "x", dit=dit))
    trainer = Trainer("stage3", cfg, dataset=items, vae=tiny_vae(channels))
    model = trainer.model
    assert trainer.stage.shift == (5.0 if channels == 48 else 8.0)
    batch = trainer.stage.prepare(collate_pairs(items))
    seen, handle = capture_dit_inputs(model)
    with torch.no_grad():
        model(batch, seed=1234)
    handle.remove()
    fmt = latent_format_for(channels)
    x0 = fmt.process_in(torch.cat([batch["identity_latent"], batch["target_latent"]], dim=2))
    sigma, noise = sample_noise(1234, [0, 1], tuple(x0.shape[1:]), trainer.stage.shift)
    assert seen["x"].shape == (2, channels, 3, 8, 8)  # identity latent + 2 latent frames of a 5-frame clip
    torch.testing.assert_close(seen["x"][:, :, 1:], noisy_latent(x0, noise, sigma)[:, :, 1:])
    if channels == 48:  # WAN22 + noise_mask 0: the reference frame is clean, its timestep 0
        assert torch.equal(seen["x"][:, :, 0], x0[:, :, 0])
        assert seen["t"].shape == (2, 3)
        assert torch.equal(seen["t"][:, 0], torch.zeros(2))
        torch.testing.assert_close(seen["t"][:, 1:], (sigma * 1000)[:, None].expand(2, 2))
    else:  # WAN21 inpainting: the reference frame noised at the same sigma with the same noise
        torch.testing.assert_close(seen["x"][:, :, 0], noisy_latent(x0, noise, sigma)[:, :, 0])
        torch.testing.assert_close(seen["t"], sigma * 1000)
    assert torch.equal(seen["motion"][:, :, 0], torch.zeros_like(seen["motion"][:, :, 0]))
    assert list(seen["hooks"]) == [5]  # one expression block after DiT block 5 of 6
    # Expression tokens: the inference path (Expression Encode + pooling per latent frame) on each sample.
    tokens = seen["hooks"][5].tokens
    for i in range(2):
        ref = pool_to_latent_frames(encode_expression(model.ima, items[i]["driving"], items[i]["driving_face_boxes"]))
        torch.testing.assert_close(tokens[i], ref)


def test_stage3_from_a_dit_file_widened_export_and_no_heatmap_supervision(tmp_path, items):
    base = tmp_path / "base.safetensors"
    torch.manual_seed(0)
    from im_animation_core.wan import WanDiT

    save_wan_state_dict(WanDiT(WanDiTConfig(dim=128, ffn_dim=256, num_layers=6, in_dim=16, out_dim=16)), base)
    cfg = config_from_dict("stage3", tiny_config_dict(
        "stage3", tmp_path / "w", steps=1, dit={"path": str(base), "export": "widened"}, heatmap_supervision=False))
    trainer = Trainer("stage3", cfg, dataset=items, vae=tiny_vae())
    assert not any(p.requires_grad for p in trainer.model.ima.retarget.heatmap_head.parameters())
    result = trainer.train()
    assert result.last_losses["retarget"] == 0.0
    sd = load_wan_state_dict(tmp_path / "w" / "wan_dit.safetensors")
    assert sd["patch_embedding.weight"].shape[1] == 16 + 4  # latent + motion channels for the stock loader
    widened = load_wan_dit(tmp_path / "w" / "wan_dit.safetensors")  # split back into base + motion patch
    assert widened.config.in_dim == 16 and widened.motion_channels == 4
    torch.testing.assert_close(widened.motion_patch.weight, trainer.model.ima.motion_patch.weight)
