"""The command line: python -m im_animation_core.train stage2 --config cfg.json [--set K=V] [--resume DIR]."""

import json
import subprocess
import sys
from pathlib import Path

from im_animation_core.train.presets import tiny_config_dict, write_tiny_vae

REPO = Path(__file__).resolve().parents[2]


def test_command_line(tmp_path):
    vae = write_tiny_vae(tmp_path / "vae.safetensors")
    cfg = tiny_config_dict("stage2", tmp_path / "cli", vae_path=vae, steps=2, data={"num_samples": 4})
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    cmd = [sys.executable, "-m", "im_animation_core.train", "stage2", "--config", str(tmp_path / "cfg.json"),
           "--set", "cpu_threads=1", "--set", "retarget=self_attention"]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["step"] == 2 and summary["files"]["modules"] == "im_animation_modules.safetensors"
    assert json.loads((tmp_path / "cli" / "config.json").read_text())["retarget"] == "self_attention"
    # Resume the finished run for 2 more steps from the command line.
    done = subprocess.run(cmd + ["--set", "steps=4", "--resume", str(tmp_path / "cli")], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1])["step"] == 4
    # A bad config: exit status 2 and a message naming the field.
    (tmp_path / "bad.json").write_text(json.dumps({"optim": {"lr": -1}}))
    done = subprocess.run([sys.executable, "-m", "im_animation_core.train", "stage1", "--config",
                           str(tmp_path / "bad.json")], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "optim.lr" in done.stderr
