"""Stage 2 at tiny size: L_retarget falls on a fixed cross-identity batch; the exported tokenizer + modules,
loaded with the project's loaders, retarget exactly as the trained model did (pipeline.retarget, the
inference path); the self-attention ablation and the Stage-2 augmentation."""

import copy
import json
import logging

import pytest
import torch

from im_animation_core.data import SyntheticPairs, collate_pairs
from im_animation_core.modules import IMAnimationModules
from im_animation_core.pipeline import retarget
from im_animation_core.tokenizer import MotionTokenizer, encode_frames
from im_animation_core.tokenizer.encode import encode_clips, token_spread
from im_animation_core.train import SelfAttentionRetarget, Trainer, config_from_dict, load_modules
from im_animation_core.train.config import ConfigError
from im_animation_core.train.presets import tiny_config_dict, tiny_vae
from im_animation_core.train.retarget_init import retarget_local_attention_init_
from im_animation_core.train.trainer import COLLAPSED_TOKEN_SPREAD, METRICS_FILE, _StepBatches, _StepItems

pytestmark = pytest.mark.usefixtures("one_thread")


def pairs(n=2, frames=5):
    return [SyntheticPairs("train", n, frames=frames, size=64, seed=5)[i] for i in range(n)]


def test_stage2_loss_falls_and_the_exports_retarget_as_inference_does(tmp_path):
    items = pairs()
    batch = collate_pairs(items)
    cfg = config_from_dict("stage2", tiny_config_dict(
        "stage2", tmp_path / "s2", steps=12, save_every=100, optim={"lr": 3e-3}, data={"augment": False},
        tokenizer={"save_dtype": "float32"}))
    vae = tiny_vae()
    trainer = Trainer("stage2", cfg, dataset=items, vae=vae)
    before = trainer.evaluate(batch, seed_step=7)
    trainer.train()
    after = trainer.evaluate(batch, seed_step=7)
    assert after["retarget"] < 0.6 * before["retarget"], (before, after)

    out = tmp_path / "s2"
    modules = IMAnimationModules.from_file(str(out / "im_animation_modules.safetensors"))
    assert modules.dit.dim == 128 and modules.dit.depth == 6 and modules.dit.latent_channels == 16
    tokenizer = MotionTokenizer.from_file(out / "motion_tokenizer.safetensors")
    # Inference: Encode Driving Video -> VAE Encode of the identity -> Retarget to Identity.
    frames = items[0]["driving"]
    tokens, _ = encode_frames(tokenizer, frames, chunk_size=8)
    with torch.no_grad():
        identity_latent = vae.encode(items[0]["identity"][None, :, :, :, None].permute(0, 3, 4, 1, 2) * 2 - 1)
    inferred = retarget(modules.eval(), tokens, identity_latent, frames.shape[0])
    # Training's path on the same sample.
    model = trainer.model.eval()
    sample = trainer.stage.prepare(collate_pairs(items[:1]))
    with torch.no_grad():
        trained, _, _ = model.retarget(sample)
    assert inferred.shape == trained.shape == (1, 4, 2, 8, 8)
    torch.testing.assert_close(inferred, trained, rtol=1e-5, atol=1e-5)


def test_self_attention_ablation_trains_and_its_file_says_so(tmp_path):
    items = pairs()
    cfg = config_from_dict("stage2", tiny_config_dict("stage2", tmp_path / "sa", steps=2, retarget="self_attention"))
    trainer = Trainer("stage2", cfg, dataset=items, vae=tiny_vae())
    assert isinstance(trainer.model.ima.retarget, SelfAttentionRetarget)
    assert not trainer.model.ima.retarget.mask_token.requires_grad
    trainer.train()
    loaded = load_modules(str(tmp_path / "sa" / "im_animation_modules.safetensors"))
    assert isinstance(loaded.retarget, SelfAttentionRetarget)
    # Continuing from it with the mask-token config is refused.
    cfg2 = config_from_dict("stage2", tiny_config_dict(
        "stage2", tmp_path / "x", modules={"path": str(tmp_path / "sa" / "im_animation_modules.safetensors")}))
    with pytest.raises(Exception, match="'self_attention' retargeting module but the config says retarget "
                                        "'mask_tokens'"):
        Trainer("stage2", cfg2, dataset=items, vae=tiny_vae())


def test_stage2_augments_the_identity_side_only_and_deterministically():
    from im_animation_core.train.build import augment_fn
    from im_animation_core.train.config import DataConfig

    items = pairs(1)
    wrapped = _StepItems(items, seed=0, augment=augment_fn(DataConfig(augment=True)))
    a, b, c = wrapped[(3, 0)], wrapped[(3, 0)], wrapped[(4, 0)]
    assert torch.equal(a["identity"], b["identity"]) and torch.equal(a["target_joints"], b["target_joints"])
    assert not torch.equal(a["identity"], c["identity"])  # another step, another draw
    assert not torch.equal(a["identity"], items[0]["identity"])
    assert torch.equal(a["driving"], items[0]["driving"])  # the driving side is left as is


def test_step_batches_resume_mid_epoch():
    from torch.utils.data import DistributedSampler

    sampler = DistributedSampler(range(6), num_replicas=1, rank=0, shuffle=True, seed=1, drop_last=True)
    full = list(_StepBatches(sampler, 2, 0, 7))
    assert [b[0][0] for b in full] == list(range(1, 8))
    assert list(_StepBatches(sampler, 2, 4, 7)) == full[4:]
    assert sorted(i for b in full[:3] for _, i in b) == list(range(6))  # an epoch covers the data once


def test_local_retarget_init_is_fitted_on_the_first_training_pairs(tmp_path):
    items = pairs(n=3)
    vae = tiny_vae()

    def trainer(init, **retarget):
        modules = {"retarget_init": init}
        if retarget:
            modules["retarget"] = retarget
        cfg = config_from_dict("stage2", tiny_config_dict("stage2", tmp_path / init, steps=1, modules=modules,
                                                          data={"augment": False}))
        return Trainer("stage2", cfg, dataset=items, vae=vae)

    local, default = trainer("local"), trainer("default")
    # The same weights as retarget_local_attention_init_ applied by hand to the default init on those pairs.
    sample = default.stage.prepare(collate_pairs(items))
    with torch.no_grad():
        tokens, _ = encode_clips(default.model.encoder, sample["driving"], trainable=False)
    expected = retarget_local_attention_init_(copy.deepcopy(default.model.ima.retarget), tokens,
                                     sample["identity_latent"][:, :, 0])
    for key, value in expected.state_dict().items():
        torch.testing.assert_close(local.model.ima.retarget.state_dict()[key], value, msg=key)
    assert not torch.equal(local.model.ima.retarget.blocks[0].attn.q.weight,
                           default.model.ima.retarget.blocks[0].attn.q.weight)
    with pytest.raises(ConfigError, match="retarget_init 'local'.*heads"):
        trainer("local", width=64, heads=4, depth=1, out_channels=4, heatmap_channels=16)
    with pytest.raises(ConfigError, match="modules.retarget_init"):
        config_from_dict("stage2", tiny_config_dict("stage2", tmp_path / "x", modules={"retarget_init": "xavier"}))


def test_token_spread_is_zero_only_when_every_frame_has_the_same_tokens():
    same = torch.randn(1, 32, 12).expand(6, -1, -1)
    assert float(token_spread(same)) == 0.0
    assert float(token_spread(torch.randn(1, 32, 12))) == 0.0  # one frame: nothing to spread over
    assert float(token_spread(torch.randn(6, 32, 12))) > 0.5


@pytest.mark.parametrize("collapsed", [False, True])
def test_a_collapsed_motion_encoder_is_logged_and_warned_about(tmp_path, caplog, collapsed):
    """The Stage-2 demo run that trained the tokenizer collapsed its codebook (every frame the same tokens), and
    nothing said so; the metrics log now carries token_spread and the trainer warns once when it is ~0."""
    items = pairs()
    # Collapsed: the tiny tokenizer from random (TiTok-style) weights maps every frame to one code, as the
    # collapsed demo tokenizer did. Healthy: a fresh conv encoder, whose tokens differ between frames.
    encoder = {} if collapsed else {"motion_encoder": "conv", "conv_encoder": {"image_size": 64,
                                                                              "channels": [8, 16]}}
    cfg = config_from_dict("stage2", tiny_config_dict(
        "stage2", tmp_path / "s2", steps=2, log_every=1, save_every=100, data={"augment": False}, **encoder))
    trainer = Trainer("stage2", cfg, dataset=items, vae=tiny_vae())
    with caplog.at_level(logging.WARNING, logger="im_animation_core.train.trainer"):
        trainer.train()
    spreads = [json.loads(line)["token_spread"] for line in (tmp_path / "s2" / METRICS_FILE).read_text().splitlines()]
    assert len(spreads) == 2
    warned = [r for r in caplog.records if "collapsed" in r.getMessage()]
    if collapsed:
        assert max(spreads) < 1e-6 and len(warned) == 1 and "tokenizer.trainable false" in warned[0].getMessage()
    else:
        assert min(spreads) > COLLAPSED_TOKEN_SPREAD and not warned
