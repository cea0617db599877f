"""python -m im_animation_core.train vae: the demo VAE's entry point (config, data, freezing, file)."""

import json

import pytest
import torch

from im_animation_core.train.__main__ import main
from im_animation_core.train.config import ConfigError
from im_animation_core.train.vae_stage import VAEStageConfig, run_vae
from im_animation_core.wan.vae import load_wan_vae


def tiny(tmp_path, **over) -> dict:
    cfg = {"output": str(tmp_path / "vae.safetensors"), "steps": 2, "batch_size": 2, "eval_every": 2,
           "data": {"frames": 5, "size": 16, "num_samples": 8, "options": {"thickness_scale": 1.5}},
           "eval": {"count": 1, "seed": 3},
           "train": {"vae": {"dim": 4}, "log_every": 1}}
    cfg.update(over)
    return cfg


def test_cli_trains_saves_and_logs(tmp_path, one_thread, capsys):
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps(tiny(tmp_path)))
    assert main(["vae", "--config", str(path), "--set", "steps=3"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["stage"] == "vae" and result["steps"] == 3 and result["eval_psnr"] > 0
    model = load_wan_vae(tmp_path / "vae.safetensors")
    assert model.config.dim == 4
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert lines[0]["config"]["steps"] == 3
    assert [r["step"] for r in lines[1:]] == [1, 2, 3] and "eval_psnr" in lines[-1]


def test_freeze_encoder_keeps_the_latent_space(tmp_path, one_thread):
    first = run_vae(VAEStageConfig.from_dict(tiny(tmp_path)), log=None)
    before = load_wan_vae(first["output"]).state_dict()
    out2 = tmp_path / "dec" / "vae.safetensors"
    cfg = tiny(tmp_path, output=str(out2), init=first["output"], steps=3)
    cfg["train"] = {**cfg["train"], "freeze_encoder": True, "lr": 1e-2}
    run_vae(VAEStageConfig.from_dict(cfg), log=None)
    after = load_wan_vae(out2).state_dict()
    enc = [k for k in before if k.startswith(("encoder.", "conv1."))]
    dec = [k for k in before if k.startswith(("decoder.", "conv2."))]
    assert enc and dec
    assert all(torch.equal(before[k], after[k]) for k in enc)
    assert any(not torch.equal(before[k], after[k]) for k in dec)


def test_bad_configs_say_what_to_fix(tmp_path):
    with pytest.raises(ConfigError, match="output"):
        VAEStageConfig.from_dict({"steps": 1})
    with pytest.raises(ConfigError, match="unknown VAE config fields"):
        VAEStageConfig.from_dict({"output": "x", "stepz": 1})
    first = run_vae(VAEStageConfig.from_dict(tiny(tmp_path, steps=1)), log=None)
    cfg = tiny(tmp_path, output=str(tmp_path / "b.safetensors"), init=first["output"])
    cfg["train"] = {"vae": {"dim": 6}}  # not a multiple of the init's 4: no widening
    with pytest.raises(ConfigError, match="init VAE"):
        run_vae(VAEStageConfig.from_dict(cfg), log=None)
    cfg["train"] = {"vae": {"dim": 8, "z_dim": 8}}
    with pytest.raises(ConfigError, match="init VAE"):
        run_vae(VAEStageConfig.from_dict(cfg), log=None)


def test_crop_trains_on_seeded_windows_of_the_frames(tmp_path, one_thread):
    from im_animation_core.data import SyntheticPairs
    from im_animation_core.train.vae_stage import _clips

    cfg = VAEStageConfig.from_dict(tiny(tmp_path, crop=8, batch_size=2))
    batches = _clips(cfg)
    first = next(batches)
    assert first.shape == (2, 5, 8, 8, 3)
    whole = SyntheticPairs("train", 8, 5, 16, 0, thickness_scale=1.5)[0]["driving"]
    # the window is a piece of the clip, at the same place in every frame
    hits = [(y, x) for y in range(9) for x in range(9) if torch.equal(whole[:, y:y + 8, x:x + 8], first[0])]
    assert hits
    assert torch.equal(next(_clips(cfg)), first)  # seeded: the same windows on a rerun
    assert run_vae(cfg)["eval_psnr"] > 0  # trains on windows, scores whole held-out frames
    for bad in (12, -8, 32):
        with pytest.raises(ConfigError, match="crop"):
            run_vae(VAEStageConfig.from_dict(tiny(tmp_path, crop=bad)))
