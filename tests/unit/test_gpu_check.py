"""scripts/gpu_check.sh and lab.bench.gpu_check: the shell script parses and keeps to its time boxes, the full-size
plan is the paper's (5B DiT, 81 frames of 480x832, a valid FSDP Stage-3 config), and --smoke runs every part on
the CPU (the ComfyUI server, ComfyUI in-process, a one-process gloo group for the trainer's FSDP path) with
figures that are real measurements and agree with the models it builds."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from im_animation_core.tokenizer import MotionTokenizerConfig
from im_animation_core.train import config_from_dict
from im_animation_core.wan.config import WanDiTConfig
from im_animation_core.wan.model import parameter_count
from lab.bench import gpu_check
from lab.bench.bench_tokenizer import flops_per_frame

REPO = Path(__file__).resolve().parents[2]


def test_script_parses_and_calls_the_module():
    assert subprocess.run(["bash", "-n", str(REPO / "scripts" / "gpu_check.sh")]).returncode == 0
    text = (REPO / "scripts" / "gpu_check.sh").read_text()
    assert "-m lab.bench.gpu_check" in text and "timeout" in text and "--smoke" in text
    assert gpu_check.TOTAL_S[False] <= 8 * 60 and gpu_check.TOTAL_S[True] < 5 * 60
    assert all(box <= gpu_check.TOTAL_S[False] for box, _ in gpu_check.BOXES[False].values())


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


def finite_positive(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x > 0


def test_smoke_runs_every_part_on_the_cpu(tmp_path):
    """scripts/gpu_check.sh --smoke: every part ok on the CPU, with figures that are real measurements."""
    out = tmp_path / "report.json"
    done = subprocess.run(["bash", str(REPO / "scripts" / "gpu_check.sh"), "--smoke", str(out)], cwd=REPO,
                          capture_output=True, text=True, timeout=330,
                          env={**os.environ, "PYTHON": sys.executable, "PYTHONPATH": str(REPO)})
    assert out.is_file(), done.stdout[-3000:] + done.stderr[-3000:]
    r = json.loads(out.read_text())
    assert set(r["parts"]) == {"comfy_demo", "comfy_5b", "tokenizer", "fsdp_step"}
    failed = {k: (v.get("error"), v.get("log_tail", "")[-1500:]) for k, v in r["parts"].items() if not v["ok"]}
    assert not failed, failed
    assert done.returncode == 0, done.stderr[-2000:]
    assert r["smoke"] and r["device"] == "cpu" and r["wall_s"] < 5 * 60
    assert "| comfy_5b | yes |" in out.with_suffix(".md").read_text()

    demo = r["parts"]["comfy_demo"]["servers"]["cpu"]
    assert demo["after_unload_equal"] and demo["after_unload"]["max_abs_diff"] == 0.0
    assert all(finite_positive(x) for x in demo["run_s"]) and finite_positive(demo["peak_rss_bytes"])
    assert finite_positive(demo["psnr"]) and 0 < demo["ssim"] <= 1
    # the run after POST /free loads the pack's modules and the DiT again through ComfyUI's model management
    assert {"IMAnimationModules", "MotionTokenizer"} <= set(demo["loaded_per_run"][1])

    five = r["parts"]["comfy_5b"]
    assert set(five["runs"]) == {f"{d}@{w}x{h}" for d in ("default", "fp8_e4m3fn") for h, w in [(64, 96), (96, 160)]}
    for run in five["runs"].values():
        assert all(math.isfinite(run[f"{side}_s_per_step"]) for side in ("native", "patched"))
        assert finite_positive(run["native_1_step_call_s"]) and finite_positive(run["patched_1_step_call_s"])
        assert finite_positive(run["patched_over_native_calls"]) and finite_positive(run["peak_bytes"])
    assert finite_positive(five["encode_driving_frames_per_s"])

    s = gpu_check.sizes(smoke=True)
    tok = r["parts"]["tokenizer"]
    assert tok["gflop_per_frame"] == pytest.approx(flops_per_frame(s.tokenizer) / 1e9)
    assert finite_positive(tok["frames_per_s"])
    assert tok["tflop_per_s"] == pytest.approx(tok["gflop_per_frame"] * tok["frames_per_s"] / 1e3)
    step = r["parts"]["fsdp_step"]
    assert step["steps"] == 2 and math.isfinite(step["loss"]) and finite_positive(step["sec_per_step"])
    assert finite_positive(step["peak_bytes"])
    assert step["trainable_params"] > parameter_count(s.dit)  # the DiT and the modules train
    assert s.tokenizer == MotionTokenizerConfig(width=64, layers=1, heads=1, codebook_size=64)


def test_the_optional_dit_step_on_the_cpu():
    r = gpu_check.run_in_process("sampling", smoke=True)
    s = gpu_check.sizes(smoke=True)
    assert r["dit_params"] == parameter_count(s.dit) == r["dit_config_params"]
    assert r["expression_blocks"] == [5]  # one expression block after block 5 of 6
    assert r["tokens"] == 3 * 2 * 2  # reference + 2 latent frames of 2 x 2 patches
    assert r["patched_over_native"] == pytest.approx(r["patched_s"] / r["native_s"])


def test_a_part_past_its_time_box_is_recorded_and_the_next_runs(tmp_path, monkeypatch):
    monkeypatch.setitem(gpu_check.BOXES, True, {**gpu_check.BOXES[True], "fsdp_step": (0.5, 0)})
    r = gpu_check.run(True, ["fsdp_step", "tokenizer"], tmp_path)
    assert not r["parts"]["fsdp_step"]["ok"] and "time box" in r["parts"]["fsdp_step"]["error"]
    assert r["parts"]["tokenizer"]["ok"] and finite_positive(r["parts"]["tokenizer"]["frames_per_s"])
    assert "| fsdp_step | NO |" in gpu_check.markdown(r)
