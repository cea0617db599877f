"""configs/paper.json: the three stages at the paper's settings for real data (section 4.1), chained into each other;
and Stage 3 run for one optimizer step on this CPU with the exact Wan2.2 TI2V-5B block (dim 3072, FFN 14336,
24 heads, 48 latent channels, text width 4096), one block deep, on a tiny clip."""

import math
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from im_animation_core.train import Trainer, config_from_dict
from im_animation_core.train.presets import TINY_MODULES, TINY_TOKENIZER, tiny_vae
from im_animation_core.train.recipe import recipe_phase_config
from im_animation_core.train.stages import DIT_FILE
from im_animation_core.wan.config import WanDiTConfig
from im_animation_core.wan.model import wan_dit_on_meta

PAPER = Path(__file__).resolve().parents[2] / "configs" / "paper.json"
FILES = {"stage1": "stage1", "stage2": "stage2", "stage3": "stage3_5b"}  # {stage: the recipe's phase}


def raw(stage):
    named, data = recipe_phase_config(PAPER, FILES[stage])
    assert named == stage
    return data


@pytest.mark.parametrize("stage", FILES)
def test_paper_configs_hold_the_paper_settings(stage):
    c = config_from_dict(stage, raw(stage))
    assert (c.data.kind, c.data.frames, c.data.root) == ("video_folder", 81, "data/clips")
    assert c.steps == {"stage1": 5000, "stage2": 10000, "stage3": 30000}[stage]
    assert c.optim.lr == {"stage1": 1e-4, "stage2": 1e-4, "stage3": 5e-5}[stage]
    assert (c.optim.warmup_steps, c.optim.decay_steps) == (0, 0)  # the paper states a constant rate
    assert c.device == "cuda" and c.mixed_precision == "bf16"
    if stage == "stage1":
        assert c.tokenizer.titok_path  # paper: Stage 1 starts from TiTok-L-32
    if stage == "stage2":
        assert c.data.augment
        assert (c.dit.dim, c.dit.ffn_dim, c.dit.num_layers, c.dit.in_dim) == (3072, 14336, 30, 48)
    if stage == "stage3":
        assert c.dit_lr == 1e-5 and c.retarget_weight == 10.0
        assert c.strategy == "fsdp" and c.dit.gradient_checkpointing and c.dit.dtype == "float32"
        assert c.dit.path.endswith("wan2.2_ti2v_5B_fp16.safetensors")
    if stage != "stage1":
        assert c.vae.factory.startswith("im_animation_core.wan.vae22:")
        assert c.vae.path.endswith("wan2.2_vae.safetensors")


def test_paper_stages_read_what_the_stage_before_wrote():
    s1, s2, s3 = raw("stage1"), raw("stage2"), raw("stage3")
    assert s2["tokenizer"]["path"] == f"{s1['output_dir']}/motion_tokenizer.safetensors"
    assert s3["tokenizer"]["path"] == f"{s2['output_dir']}/motion_tokenizer.safetensors"  # Stage 2 trains it too
    assert s3["modules"]["path"] == f"{s2['output_dir']}/im_animation_modules.safetensors"


def test_stage3_one_step_at_the_5b_block_widths(tmp_path, monkeypatch):
    cfg = raw("stage3")
    five = WanDiTConfig.ti2v_5b()
    cfg.update(output_dir=str(tmp_path / "run"), steps=1, log_every=1, device="cpu", mixed_precision="no",
               cpu_threads=1, text_len=8)
    cfg["data"] = {"kind": "synthetic", "frames": 5, "size": 64, "num_samples": 2}
    cfg["tokenizer"] = {"config": dict(TINY_TOKENIZER), "trainable": True}
    cfg["modules"] = dict(TINY_MODULES)
    cfg["dit"] = {**cfg["dit"], "path": "", "dim": five.dim, "ffn_dim": five.ffn_dim, "num_heads": five.num_heads,
                  "num_layers": 1, "in_dim": five.in_dim, "out_dim": five.out_dim, "text_dim": five.text_dim}
    cfg["vae"] = {}
    trainer = Trainer("stage3", config_from_dict("stage3", cfg), vae=tiny_vae(48))
    block = {k: v.shape for k, v in trainer.model.dit.blocks[0].state_dict().items()}
    assert block == {k: v.shape for k, v in wan_dit_on_meta(five).blocks[0].state_dict().items()}
    assert trainer.model.dit.checkpoint_blocks == {0}
    head_before = trainer.model.dit.head.head.weight.detach().clone()
    monkeypatch.setattr(trainer, "save_checkpoint", lambda: None)  # 3 GB of AdamW state: not this test's subject
    result = trainer.train()
    assert result.step == 1 and math.isfinite(result.last_losses["loss"]) and math.isfinite(
        result.last_losses["grad_norm"])
    assert not torch.equal(trainer.model.dit.head.head.weight.detach(), head_before)  # the step moved the DiT
    state = trainer.optimizer.state[trainer.model.dit.blocks[0].ffn[0].weight]
    assert state["exp_avg"].shape == (five.ffn_dim, five.dim)
    with safe_open(str(tmp_path / "run" / DIT_FILE), framework="pt") as f:
        assert f.get_slice("blocks.0.ffn.0.weight").get_shape() == [five.ffn_dim, five.dim]
        assert f.get_slice("blocks.0.ffn.0.weight").get_dtype() == "BF16"  # the config's save_dtype
