"""lab.bench.bench_tokenizer on a tiny model: the kernel rows, the GEMM rate and its share, the CPU model."""

import os

import pytest
import torch

import im_animation_core.tokenizer.linear_kernels as kernels
from im_animation_core import MotionTokenizerConfig
from lab.bench import bench_tokenizer

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = MotionTokenizerConfig(width=128, layers=3, heads=2)


def test_rows_carry_the_kernels_and_the_gemm_share(monkeypatch):
    monkeypatch.delenv(kernels.ENV_VAR, raising=False)
    rows = bench_tokenizer.bench_size("tiny", TINY, [1], 1, torch.device("cpu"), half=False)
    paths = [row["path"] for row in rows]
    expected = ["reference fp32", "fast fp32", "fast, F.linear"]
    if kernels.onednn_linear_available():
        expected.append("fast, oneDNN")
    assert paths == expected
    assert kernels.ENV_VAR not in os.environ  # the forced rows put the environment back
    for row in rows:
        assert row["match"] >= 0.999
        assert row["gemm"]["best"] >= max(v for k, v in row["gemm"].items() if k != "best") * 0.999
        assert row["gemm_share"] == pytest.approx(row["gflops"] / row["gemm"]["best"])
    fast = {row["path"]: row for row in rows if row["path"].startswith("fast")}
    best_forced = min(fast[p]["wall"] for p in expected[2:])
    assert fast["fast fp32"]["x_best_kernel"] == pytest.approx(best_forced / fast["fast fp32"]["wall"])
    assert rows[0]["x_best_kernel"] != rows[0]["x_best_kernel"]  # NaN for the reference


def test_gemm_rate_counts_the_blocks_shapes():
    assert bench_tokenizer.linear_shapes(TINY) == [(128, 384), (128, 128), (128, 512), (512, 128)]
    rates = bench_tokenizer.gemm_rate(TINY, 32, 2)
    assert {"mm", "F.linear", "best"} <= set(rates) and all(v > 0 for v in rates.values())


def test_cpu_model_is_named():
    assert bench_tokenizer.cpu_model().strip()
