"""CPU float32 linear kernels of the tokenizer's inference path, and the timed choice between them.

Two kernels compute ``x @ weight.T + bias`` followed by an epilogue ("none", exact "gelu", or "add" of a
residual):

- ``"onednn"``: oneDNN's linear (``torch.ops.mkldnn._linear_pointwise``), the epilogue fused into the GEMM;
- ``"aten"``: ``F.linear`` / ``addmm_`` (PyTorch's BLAS sgemm, MKL on x86) with the epilogue done in place.

Neither is faster everywhere: on an AMD EPYC (Zen 5) oneDNN ran the tokenizer's GEMMs at about twice MKL's
rate, on an Intel Xeon (AVX-512) MKL's sgemm was the faster one. So :func:`kernel_for` times both on
the shapes of the real call, once per key (weight shape, rows bucket, dtype, threads, epilogue) and process,
and keeps the faster. oneDNN's op is private, so :func:`onednn_linear_available` first checks that it runs
and agrees with ``F.linear``; a failed check rules oneDNN out whatever the timing or the override says.

``IMA_LINEAR_KERNEL`` (environment, read at each call) overrides the choice: ``auto`` (default, timed),
``onednn`` or ``aten`` (forced; for tests and benchmarks).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange

KERNELS = ("onednn", "aten")
EPILOGUES = ("none", "gelu", "add")
ENV_VAR = "IMA_LINEAR_KERNEL"

# Rows of the input the candidates are timed on; larger inputs share one key. It bounds the timing's cost
# (about 2 GFLOP per call for the large tokenizer's c_fc), and both kernels tile the rows in blocks far
# smaller than this, so the ranking carries over to the tokenizer's thousands of rows (on the AMD EPYC it
# was the same from 64 to 4624 rows). A machine where it flips above 256 rows would need a larger cap.
ROWS_CAP = 256
# Calls per candidate: one warm-up (oneDNN builds its primitive for the shape, pages are touched), then the
# best of at least MIN_ROUNDS timed calls, alternating the candidates so that a busy machine slows both alike.
# A preempted call or a stalled thread barrier costs tens of milliseconds, far more than a small GEMM, so
# cheap shapes get more rounds (up to MAX_ROUNDS, while the timing has spent under ROUNDS_BUDGET_S).
MIN_ROUNDS = 2
MAX_ROUNDS = 10
ROUNDS_BUDGET_S = 0.02

_probe_result: bool | None = None


@dataclass(frozen=True)
class KernelChoice:
    """A cached decision: the chosen kernel, the best time (s) of each candidate on ``rows`` rows, and the
    wall time the whole timing took (``cost_s``, warm-ups included)."""

    kernel: str
    seconds: dict[str, float]
    rows: int
    cost_s: float = 0.0


_choices: dict[tuple, KernelChoice] = {}


def onednn_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, epilogue: str,
                  residual: torch.Tensor | None = None) -> torch.Tensor:
    """oneDNN's linear with the epilogue fused; returns a new tensor (``residual`` is not written)."""
    ops = torch.ops.mkldnn._linear_pointwise
    if epilogue == "add":
        return ops.binary(x, residual, weight, bias, "add")
    if epilogue == "gelu":
        return ops(x, weight, bias, "gelu", [], "none")
    return ops(x, weight, bias, "none", [], "")


def aten_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, epilogue: str,
                residual: torch.Tensor | None = None) -> torch.Tensor:
    """F.linear then an in-place epilogue; for "add", one GEMM that accumulates into the contiguous
    ``residual`` (overwritten and returned), so no [rows, out] temporary is allocated."""
    if epilogue == "add":
        out_2d = rearrange(residual, "... w -> (...) w")
        out_2d.add_(bias).addmm_(rearrange(x, "... k -> (...) k"), weight.t())
        return residual
    out = F.linear(x, weight, bias)
    return torch.ops.aten.gelu_(out) if epilogue == "gelu" else out


def run_kernel(kernel: str, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, epilogue: str,
         residual: torch.Tensor | None) -> torch.Tensor:
    # Looked up by name at each call so that tests can replace either kernel on the module.
    fn = onednn_linear if kernel == "onednn" else aten_linear
    return fn(x, weight, bias, epilogue, residual)


def onednn_linear_available() -> bool:
    """Whether oneDNN's fused linear runs here and agrees with F.linear for every epilogue (probed once)."""
    global _probe_result
    if _probe_result is None:
        try:
            gen = torch.Generator().manual_seed(0)
            x, w, b = (torch.randn(*shape, generator=gen) for shape in ((3, 5, 8), (6, 8), (6,)))
            res = torch.randn(3, 5, 6, generator=gen)
            ok = True
            for epilogue, want in (("none", F.linear(x, w, b)), ("gelu", F.gelu(F.linear(x, w, b))),
                                   ("add", res + F.linear(x, w, b))):
                got = onednn_linear(x, w, b, epilogue, res.clone())
                ok &= got.shape == want.shape and torch.allclose(got, want, atol=1e-5)
            _probe_result = bool(ok)
        except (AttributeError, RuntimeError, NotImplementedError):
            _probe_result = False
    return _probe_result


def forced_kernel() -> str | None:
    """The kernel ``IMA_LINEAR_KERNEL`` forces, or None for the timed choice."""
    value = os.environ.get(ENV_VAR, "auto").strip().lower() or "auto"
    if value == "auto":
        return None
    if value not in KERNELS:
        raise ValueError(f"{ENV_VAR}={value!r}: expected one of auto, {', '.join(KERNELS)}.")
    return value


def rows_bucket(rows: int) -> int:
    """Rows rounded up to a power of two, capped at ROWS_CAP (larger inputs share the key timed on ROWS_CAP rows)."""
    return min(1 << max(rows - 1, 0).bit_length(), ROWS_CAP)


def choice_key(x: torch.Tensor, weight: torch.Tensor, epilogue: str) -> tuple:
    rows = x.numel() // x.shape[-1]
    return (tuple(weight.shape), rows_bucket(rows), x.dtype, torch.get_num_threads(), epilogue)


def kernel_for(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, epilogue: str,
               residual: torch.Tensor | None = None) -> str:
    """The kernel to run this CPU float32 call with: forced by ``IMA_LINEAR_KERNEL``, else the timed choice.

    oneDNN only when its probe passed. The first call of a key times both kernels on (up to ROWS_CAP of) its
    rows; later calls read the cache.
    """
    forced = forced_kernel()
    if forced == "aten" or not onednn_linear_available():
        return "aten"
    if forced == "onednn":
        return "onednn"
    key = choice_key(x, weight, epilogue)
    choice = _choices.get(key)
    if choice is None:
        choice = _choices[key] = _time_candidates(x, weight, bias, epilogue, residual)
    return choice.kernel


def _time_candidates(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, epilogue: str,
                     residual: torch.Tensor | None) -> KernelChoice:
    began = time.perf_counter()
    x_2d = rearrange(x, "... k -> (...) k")
    rows = min(x_2d.shape[0], ROWS_CAP)
    x_2d = x_2d[:rows].contiguous()
    # The real residual is not touched: the "aten" kernel writes into its residual argument.
    scratch = rearrange(residual, "... w -> (...) w")[:rows].clone() if epilogue == "add" else None
    best = dict.fromkeys(KERNELS, float("inf"))
    spent = 0.0
    for call in range(1 + MAX_ROUNDS):
        if call > MIN_ROUNDS and spent >= ROUNDS_BUDGET_S:
            break
        # Each kernel goes first in every other round: the first call of a round can find colder caches.
        for kernel in KERNELS if call % 2 else KERNELS[::-1]:
            start = time.perf_counter()
            run_kernel(kernel, x_2d, weight, bias, epilogue, scratch)
            elapsed = time.perf_counter() - start
            if call > 0:
                best[kernel] = min(best[kernel], elapsed)
                spent += elapsed
    return KernelChoice(kernel=min(KERNELS, key=best.__getitem__), seconds=best, rows=rows,
                        cost_s=time.perf_counter() - began)


def kernel_choices() -> dict[tuple, KernelChoice]:
    """A copy of this process's cached choices, by key (weight shape, rows bucket, dtype, threads, epilogue)."""
    return dict(_choices)


def clear_kernel_choices(probe: bool = False) -> None:
    """Forget the cached choices (and with probe=True the oneDNN probe's result), e.g. after a test."""
    global _probe_result
    _choices.clear()
    if probe:
        _probe_result = None
