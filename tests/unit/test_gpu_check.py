"""scripts/gpu_check.sh and bench.gpu_check: the shell script parses, the full-size plan is the paper's (5B DiT,
81 frames of 480x832, a valid FSDP Stage-3 config), and --smoke runs every part's logic on the CPU (a
one-process gloo group, the trainer's FSDP path) with figures that agree with the models it builds."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench import gpu_check
from bench.bench_tokenizer import flops_per_frame
from im_animation_core.tokenizer import MotionTokenizerConfig
from im_animation_core.train import config_from_dict
from im_animation_core.wan.config import WanDiTConfig
from im_animation_core.wan.model import parameter_count

REPO = Path(__file__).resolve().parents[2]


def test_script_parses_and_calls_the_module():
    assert subprocess.run(["bash", "-n", str(REPO / "scripts" / "gpu_check.sh")]).returncode == 0
    text = (REPO / "scripts" / "gpu_check.sh").read_text()
    assert "-m bench.gpu_check" in text and "timeout" in text and " 600 " in text


def test_full_sizes_are_the_paper_scale(tmp_path):
    s = gpu_check.sizes(smoke=False)
    assert s.dit == WanDiTConfig.ti2v_5b() and parameter_count(s.dit) == 4_999_787_712
    assert (s.frames, s.height, s.width) == (81, 480, 832)
    assert gpu_check.latent_grid(s) == (21, 30, 52)
    assert flops_per_frame(s.tokenizer) / 1e9 == pytest.approx(183.16, abs=0.01)
    import torch

    c = config_from_dict("stage3", gpu_check.stage3_config(s, torch.device("cuda"), tmp_path))
    assert (c.strategy, c.mixed_precision, c.dit.gradient_checkpointing, c.dit.dtype) == (
        "fsdp", "bf16", True, "float32")
    assert (c.dit.dim, c.dit.num_layers, c.data.frames) == (3072, 30, 81)


def test_smoke_runs_every_part_on_the_cpu(tmp_path):
    out = tmp_path / "report.json"
    done = subprocess.run([sys.executable, "-m", "bench.gpu_check", "--smoke", "--out", str(out)], cwd=REPO,
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    r = json.loads(out.read_text())
    s = gpu_check.sizes(smoke=True)
    assert r["smoke"] and r["device"] == "cpu"
    assert r["sampling"]["dit_params"] == parameter_count(s.dit) == r["dit_config_params"]
    assert r["sampling"]["expression_blocks"] == [5]  # one expression block after block 5 of 6
    assert r["sampling"]["tokens"] == 3 * 2 * 2  # reference + 2 latent frames of 2 x 2 patches
    assert r["sampling"]["patched_over_native"] == pytest.approx(r["sampling"]["patched_s"] / r["sampling"]["native_s"])
    tok = r["tokenizer"]
    assert tok["gflop_per_frame"] == pytest.approx(flops_per_frame(s.tokenizer) / 1e9)
    assert tok["tflop_per_s"] == pytest.approx(tok["gflop_per_frame"] * tok["frames_per_s"] / 1e3)
    step = r["fsdp_step"]
    assert step["steps"] == 2 and math.isfinite(step["loss"]) and step["sec_per_step"] > 0 and step["peak_bytes"] > 0
    assert step["trainable_params"] > parameter_count(s.dit)  # the DiT and the modules train
    assert s.tokenizer == MotionTokenizerConfig(width=64, layers=1, heads=1, codebook_size=64)
