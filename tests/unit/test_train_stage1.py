"""Stage 1 at tiny size: the loss falls on a fixed batch, and the outputs load with the project's loaders."""

import json

import pytest
import torch

from im_animation_core.data import SyntheticPairs, collate_pairs
from im_animation_core.heatmap_head import HeatmapHead
from im_animation_core.tokenizer import MotionTokenizer, preprocess_frames
from im_animation_core.train import ConvMotionEncoder, Trainer, config_from_dict
from im_animation_core.train.outputs import run_file
from im_animation_core.train.presets import tiny_config_dict

pytestmark = pytest.mark.usefixtures("one_thread")


def fixed_batch(n=2):
    items = [SyntheticPairs("train", n, frames=5, size=64, seed=3, same_identity=True)[i] for i in range(n)]
    return items, collate_pairs(items)


def test_stage1_loss_falls_on_a_fixed_batch_and_outputs_load(tmp_path):
    items, batch = fixed_batch()
    cfg = config_from_dict("stage1", tiny_config_dict("stage1", tmp_path / "s1", steps=12, save_every=100,
                                                      optim={"lr": 3e-3}, tokenizer={"save_dtype": "float32"}))
    trainer = Trainer("stage1", cfg, dataset=items)  # the dataset is exactly the batch
    before = trainer.evaluate(batch, seed_step=99)
    result = trainer.train()
    after = trainer.evaluate(batch, seed_step=99)
    assert result.step == 12
    assert after["heatmap"] < 0.6 * before["heatmap"], (before, after)
    assert after["loss"] < 0.6 * before["loss"], (before, after)

    out = tmp_path / "s1"
    assert run_file(out, "heatmap_head") == out / "heatmap_head.safetensors"
    tokenizer = MotionTokenizer.from_file(out / "motion_tokenizer.safetensors")  # + the config.yaml beside it
    trained = trainer.model.encoder.tokenizer
    assert tokenizer.config == trained.config
    pixels = preprocess_frames(batch["driving"][0], trained.config.image_size)
    assert torch.equal(tokenizer.encode(pixels).indices, trained.encode(pixels).indices)
    head = HeatmapHead.from_file(out / "heatmap_head.safetensors")
    tokens = tokenizer.encode(pixels).tokens
    with torch.no_grad():
        torch.testing.assert_close(head(tokens), trainer.model.head.eval()(tokens))
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [2, 4, 6, 8, 10, 12]
    assert {"loss", "heatmap", "vq", "grad_norm", "lr_stage1", "sec_per_step"} <= set(lines[-1])


def test_stage1_released_format_and_conv_ablation(tmp_path):
    items, _ = fixed_batch()
    # Default export dtype: float16, as the released motion encoder.
    cfg = config_from_dict("stage1", tiny_config_dict("stage1", tmp_path / "tok", steps=1))
    Trainer("stage1", cfg, dataset=items).train()
    from safetensors import safe_open

    with safe_open(str(tmp_path / "tok" / "motion_tokenizer.safetensors"), "pt") as f:
        assert f.get_tensor("quantize.embedding.weight").dtype == torch.float16
    MotionTokenizer.from_file(tmp_path / "tok" / "motion_tokenizer.safetensors")

    cfg = config_from_dict("stage1", tiny_config_dict("stage1", tmp_path / "conv", steps=2, motion_encoder="conv",
                                                      conv_encoder={"image_size": 64, "channels": [8, 16]}))
    trainer = Trainer("stage1", cfg, dataset=items)
    result = trainer.train()
    assert set(result.files) == {"conv_motion_encoder", "heatmap_head"}
    assert "vq" in result.last_losses and result.last_losses["vq"] == 0.0  # no quantiser in the ablation
    enc = ConvMotionEncoder.from_file(tmp_path / "conv" / "conv_motion_encoder.safetensors")
    frames = items[0]["driving"]
    assert torch.equal(enc(frames)[0], trainer.model.encoder(frames)[0])


def test_stage1_teacher_tokens_and_local_init(tmp_path):
    """A conv Stage-1 output as teacher: its tokens are a second target for teacher_steps steps only."""
    items, batch = fixed_batch()
    conv = config_from_dict("stage1", tiny_config_dict("stage1", tmp_path / "conv", steps=1, motion_encoder="conv",
                                                       conv_encoder={"image_size": 64, "channels": [8, 8, 8, 8]}))
    Trainer("stage1", conv, dataset=items).train()
    teacher_file = tmp_path / "conv" / "conv_motion_encoder.safetensors"
    cfg = config_from_dict("stage1", tiny_config_dict(
        "stage1", tmp_path / "vit", steps=4, log_every=1, teacher=str(teacher_file), teacher_steps=2,
        tokenizer={"init": "local", "quantize_warmup_steps": 3}))
    trainer = Trainer("stage1", cfg, dataset=items)
    teacher = ConvMotionEncoder.from_file(teacher_file).eval()
    frames = batch["driving"].flatten(0, 1)
    with torch.no_grad():
        expected = torch.nn.functional.mse_loss(trainer.model.encoder.eval()(frames)[0], teacher(frames)[0])
    assert trainer.evaluate(batch, seed_step=0)["teacher"] == pytest.approx(expected.item(), rel=1e-4)
    trainer.train()
    lines = [json.loads(x) for x in (tmp_path / "vit" / "metrics.jsonl").read_text().splitlines()]
    assert ["teacher" in x for x in lines] == [True, True, False, False]
    assert all(not k.startswith("teacher") for k in trainer.model.state_dict())  # not saved with the model
    bad = tiny_config_dict("stage1", tmp_path / "bad", teacher=str(tmp_path / "missing.safetensors"))
    with pytest.raises(Exception, match="teacher"):
        Trainer("stage1", config_from_dict("stage1", bad), dataset=items)
