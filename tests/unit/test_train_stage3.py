"""Stage 3 at tiny size: the loss falls on a fixed batch; the DiT gets what ComfyUI's sampler gives it (identity
latent as frame 0, clean with timestep 0 on 48-channel models, noised at the same sigma on 16-channel ones,
zero motion and no expression there); expression tokens equal the inference path's; the DiT file loads as a
Wan DiT (stock-loader sizes) and the modules file carries the matching DiT spec."""

import pytest
import torch

from im_animation_core.data import SyntheticPairs, collate_pairs
from im_animation_core.dit_targets import moving_weights
from im_animation_core.frames import pool_to_latent_frames
from im_animation_core.modules import IMAnimationModules
from im_animation_core.pipeline import encode_expression
from im_animation_core.train import ConfigError, Trainer, config_from_dict
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


@pytest.mark.parametrize("channels, reference", [(48, "auto"), (16, "auto"), (16, "clean")])
def test_dit_inputs_mirror_comfyuis_sampler(tmp_path, items, channels, reference):
    """48 channels: WAN22 + noise_mask 0; 16 channels: KSampler's inpainting on WAN21, or with reference "clean"
    what the sampler node's object patches make of it (tests/integration/test_injection_property.py)."""
    dit = {"in_dim": channels, "out_dim": channels}
    cfg = config_from_dict("stage3", tiny_config_dict("stage3", tmp_path / "x", dit=dit, reference=reference))
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
    clean = channels == 48 or reference == "clean"
    assert trainer.stage.model.ima.dit.clean_reference is clean  # what the exported modules file records
    if clean:  # the reference frame is clean, its timestep 0
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


def test_dit_draws_tile_each_clip_with_fresh_noise(tmp_path, items):
    """dit_draws 3: the DiT batch is 3 draw-major copies of the clips; draw 0 is exactly the 1-draw step, the
    others have their own sigma and noise; motion and expression tokens follow their clip."""
    seen = {}
    for draws in (1, 3):
        cfg = config_from_dict("stage3", tiny_config_dict("stage3", tmp_path / f"d{draws}", dit_draws=draws,
                                                          moving_weight=2.0))
        trainer = Trainer("stage3", cfg, dataset=items, vae=tiny_vae())
        batch = trainer.stage.prepare(collate_pairs(items))
        seen[draws], handle = capture_dit_inputs(trainer.model)
        with torch.no_grad():
            seen[draws]["losses"] = trainer.model(batch, seed=77)
        handle.remove()
    one, three = seen[1], seen[3]
    assert three["x"].shape[0] == 6 and one["x"].shape[0] == 2
    torch.testing.assert_close(three["x"][:2], one["x"])
    torch.testing.assert_close(three["t"][:2], one["t"])
    for d in (1, 2):
        rows = slice(2 * d, 2 * d + 2)
        assert torch.equal(three["motion"][rows], three["motion"][:2])
        assert not torch.allclose(three["x"][rows], three["x"][:2])
        assert not torch.equal(three["t"][rows], three["t"][:2])
    tokens = three["hooks"][5].tokens
    assert len(tokens) == 6 and all(torch.equal(tokens[i], tokens[i % 2]) for i in range(6))
    assert three["losses"]["dit"] != one["losses"]["dit"]  # averaged over more draws
    with pytest.raises(ConfigError, match="dit_draws"):
        config_from_dict("stage3", tiny_config_dict("stage3", tmp_path / "bad", dit_draws=0))


def test_reference_mode_is_exported_with_the_modules_and_carried_on_by_auto(tmp_path, items):
    cfg = config_from_dict("stage3", tiny_config_dict("stage3", tmp_path / "clean", steps=1, reference="clean"))
    Trainer("stage3", cfg, dataset=items, vae=tiny_vae()).train()
    exported = tmp_path / "clean" / "im_animation_modules.safetensors"
    assert IMAnimationModules.from_file(str(exported)).dit.clean_reference is True  # what the sampler node reads
    # "auto" continues what the starting modules file was trained with; an explicit mode overrides it
    for reference, clean in (("auto", True), ("noised", False)):
        cfg = config_from_dict("stage3", tiny_config_dict("stage3", tmp_path / reference, steps=1, reference=reference,
                                                          modules={"path": str(exported)}))
        assert Trainer("stage3", cfg, dataset=items, vae=tiny_vae()).model.ima.dit.clean_reference is clean
    with pytest.raises(ConfigError, match="reference"):
        config_from_dict("stage3", tiny_config_dict("stage3", tmp_path / "bad", reference="sharp"))
    wan22 = tiny_config_dict("stage3", tmp_path / "w22", reference="noised", dit={"in_dim": 48, "out_dim": 48})
    with pytest.raises(ConfigError, match="always gets a clean reference frame"):
        Trainer("stage3", config_from_dict("stage3", wan22), dataset=items, vae=tiny_vae(48))


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


def test_moving_weights_mark_where_the_clip_changes_from_the_identity():
    identity = torch.full((1, 64, 64, 3), 0.5)
    clip = identity[:, None].repeat(1, 9, 1, 1, 1)  # 9 frames -> latent frames {0}, {1-4}, {5-8}
    clip[:, 2, 8:16, 40:48] = 1.0  # a limb passes latent pixel (1, 5) in latent frame 1
    clip[:, 5:9, 48:64, 0:8] = 0.0  # and sits over latent pixels (6..7, 0) in latent frame 2, darker
    w = moving_weights(clip, identity, (8, 8), 10.0)
    assert w.shape == (1, 1, 3, 8, 8)
    assert torch.equal(w[0, 0, 0], torch.ones(8, 8))  # frame 0 is the identity image itself
    assert w.max() == 11.0 and w.min() == 1.0
    assert w[0, 0, 1, 1, 5] == 11.0 and w[0, 0, 2, 6, 0] == w[0, 0, 2, 7, 0] == 11.0  # both changes are 0.5
    moved = torch.zeros(3, 8, 8, dtype=torch.bool)
    moved[1, 1, 5] = moved[2, 6:8, 0] = True
    assert torch.equal(w[0, 0][~moved], torch.ones(int((~moved).sum())))
    # Half the change under half a block: half the weight.
    clip[:, 2, 8:16, 40:44] = 0.5
    assert moving_weights(clip, identity, (8, 8), 10.0)[0, 0, 1, 1, 5] == 6.0
    # A still clip: every weight is 1, no division by zero.
    assert torch.equal(moving_weights(identity[:, None].repeat(1, 5, 1, 1, 1), identity, (8, 8), 10.0),
                       torch.ones(1, 1, 2, 8, 8))


def test_moving_weight_reweights_the_fit_but_logs_the_plain_l_dit(tmp_path, items):
    batch = collate_pairs(items)
    runs = {}
    for weight in (0.0, 10.0):
        cfg = config_from_dict("stage3", tiny_config_dict("stage3", tmp_path / f"w{weight}", steps=1,
                                                          moving_weight=weight))
        runs[weight] = Trainer("stage3", cfg, dataset=items, vae=tiny_vae()).evaluate(batch, seed_step=3)
    plain, weighted = runs[0.0], runs[10.0]
    assert "dit_moving" not in plain and "dit_moving" in weighted
    assert weighted["dit"] == pytest.approx(plain["dit"], rel=1e-6)  # same model, noise and L_DiT
    assert weighted["dit_moving"] != pytest.approx(plain["dit"], rel=1e-3)
    # The weighted fit is what is optimised: the other loss terms are the same in both runs.
    assert weighted["loss"] - plain["loss"] == pytest.approx(weighted["dit_moving"] - plain["dit"], rel=1e-4)
    with pytest.raises(ConfigError, match="moving_weight"):
        config_from_dict("stage3", tiny_config_dict("stage3", tmp_path / "bad", moving_weight=-1.0))


def test_stage3_trains_on_frames_that_are_not_square(tmp_path):
    # data.size [height, width], as the paper's 704 x 1280: a config from JSON gives the pair as a list
    data = {"kind": "synthetic", "num_samples": 2, "frames": 5, "size": [32, 64], "seed": 3}
    cfg = config_from_dict("stage3", tiny_config_dict("stage3", tmp_path / "s3", steps=2, save_every=100, data=data))
    assert cfg.data.size == (32, 64)
    trainer = Trainer("stage3", cfg, vae=tiny_vae())
    trainer.train()
    item = trainer.dataset[0]
    assert item["target"].shape[1:3] == (32, 64)
    losses = trainer.evaluate(collate_pairs([item]), seed_step=1)
    assert all(torch.isfinite(torch.as_tensor(v)).all() for v in losses.values())
    with pytest.raises(ConfigError, match="data.size"):
        config_from_dict("stage3", tiny_config_dict("stage3", tmp_path / "x", data={**data, "size": [32, 0]}))


def test_motion_lr_gives_the_motion_patch_its_own_rate(tmp_path, items):
    """motion_lr puts the motion channels' patch embedding, and nothing else, in a group of its own rate; 0
    leaves it with the modules."""
    def groups(**overrides):
        cfg = config_from_dict("stage3", tiny_config_dict("stage3", tmp_path / "m", steps=1, **overrides))
        trainer = Trainer("stage3", cfg, dataset=items, vae=tiny_vae())
        return trainer, {g["name"]: g for g in trainer.optimizer.param_groups}

    trainer, by_name = groups(motion_lr=5e-3, optim={"lr": 1e-4})
    motion = {id(p) for p in trainer.model.ima.motion_patch.parameters()}
    assert {id(p) for p in by_name["motion"]["params"]} == motion and by_name["motion"]["lr"] == 5e-3
    assert not motion & {id(p) for g in ("modules", "dit") for p in by_name[g]["params"]}
    every = {id(p) for p in trainer.model.parameters() if p.requires_grad}
    assert every == {id(p) for g in by_name.values() for p in g["params"]}
    trainer.train()
    assert trainer.optimizer.param_groups[2]["name"] == "motion"

    trainer, by_name = groups()
    assert "motion" not in by_name
    assert {id(p) for p in trainer.model.ima.motion_patch.parameters()} <= {id(p) for p in by_name["modules"]["params"]}
    with pytest.raises(ConfigError, match="motion_lr"):
        config_from_dict("stage3", tiny_config_dict("stage3", tmp_path / "bad", motion_lr=-1.0))


def test_a_run_with_the_progress_bar_shows_each_steps_loss(tmp_path, items, capsys):
    cfg = config_from_dict("stage3", tiny_config_dict("stage3", tmp_path / "bar", steps=2, save_every=100,
                                                      progress=True))
    Trainer("stage3", cfg, dataset=items, vae=tiny_vae()).train()
    err = capsys.readouterr().err
    assert "2/2" in err and "loss=" in err


def test_dit_width_factor_widens_a_trained_pair_with_the_same_losses_and_exports_the_wide_pair(tmp_path, items):
    batch = collate_pairs(items)
    narrow = tmp_path / "narrow"
    Trainer("stage3", config_from_dict("stage3", tiny_config_dict("stage3", narrow, steps=2)), dataset=items,
            vae=tiny_vae()).train()
    files = {"dit": {"path": str(narrow / "wan_dit.safetensors")},
             "modules": {"path": str(narrow / "im_animation_modules.safetensors")}}

    def trainer(out, **dit):
        raw = tiny_config_dict("stage3", tmp_path / out, steps=1, **files)
        raw["dit"].update(dit)
        return Trainer("stage3", config_from_dict("stage3", raw), dataset=items, vae=tiny_vae())

    same, wide = trainer("same"), trainer("wide", width_factor=2)
    assert wide.model.dit.config.dim == 2 * same.model.dit.config.dim
    assert wide.model.ima.dit.dim == wide.model.dit.config.dim
    for s in (1, 2):  # the widened pair starts from the narrow pair's losses
        a, b = same.evaluate(batch, seed_step=s), wide.evaluate(batch, seed_step=s)
        assert b["dit"] == pytest.approx(a["dit"], rel=1e-4) and b["loss"] == pytest.approx(a["loss"], rel=1e-4)
    wide.train()
    dit = load_wan_dit(tmp_path / "wide" / "wan_dit.safetensors")
    modules = IMAnimationModules.from_file(str(tmp_path / "wide" / "im_animation_modules.safetensors"))
    assert dit.config.dim == modules.dit.dim == 2 * same.model.dit.config.dim
    assert dit.config.num_heads == modules.dit.heads == 2 * same.model.dit.config.num_heads
    assert WanDiTConfig.from_state_dict(load_wan_state_dict(tmp_path / "wide" / "wan_dit.safetensors")
                                        ).stock_loader_problems() == []


def test_dit_width_factor_needs_a_dit_file(tmp_path):
    with pytest.raises(ConfigError, match="dit.width_factor"):
        config_from_dict("stage3", tiny_config_dict("stage3", tmp_path / "x", dit={"width_factor": 2}))
