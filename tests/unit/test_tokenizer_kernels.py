"""The tokenizer's CPU linear kernels: the timed oneDNN / F.linear choice, its cache, the override, the probe."""

import time

import pytest
import torch
import torch.nn.functional as F
from unit.test_tokenizer import frames_like_video

import im_animation_core.tokenizer.linear_kernels as kernels
import im_animation_core.tokenizer.model as model_module
from im_animation_core import MotionTokenizer, MotionTokenizerConfig
from im_animation_core.tokenizer import reference_encode
from im_animation_core.tokenizer.reference import reference_latents
from im_animation_core.tokenizer.testing import random_state_dict

SMALL = MotionTokenizerConfig(width=128, layers=3, heads=2)
# A delay far above the real kernels' time on these shapes (well under a millisecond on one thread), so the
# slowed kernel loses every timing.
DELAY_S = 0.02

# One thread: on a busy 2-core machine a stalled thread barrier can cost a small GEMM tens of milliseconds.
pytestmark = pytest.mark.usefixtures("one_thread")

requires_onednn = pytest.mark.skipif(not kernels.onednn_linear_available(),
                                     reason="oneDNN's linear is not available in this torch build")


@pytest.fixture(autouse=True)
def fresh_choices(monkeypatch):
    monkeypatch.delenv(kernels.ENV_VAR, raising=False)
    kernels.clear_kernel_choices(probe=True)
    yield
    kernels.clear_kernel_choices(probe=True)


@pytest.fixture(scope="module")
def small_model():
    sd = random_state_dict(SMALL, seed=1)
    return sd, MotionTokenizer.from_state_dict(sd)


def count_timings(monkeypatch) -> list:
    calls = []
    original = kernels._time_candidates

    def spy(*args):
        calls.append(args[1].shape)
        return original(*args)

    monkeypatch.setattr(kernels, "_time_candidates", spy)
    return calls


def slowed(fn):
    def slow(*args):
        time.sleep(DELAY_S)
        return fn(*args)
    return slow


def operands(rows: int = 300, epilogue: str = "none"):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, rows, 64, generator=gen)
    w, b = torch.randn(96, 64, generator=gen) * 0.1, torch.randn(96, generator=gen)
    residual = torch.randn(2, rows, 96, generator=gen) if epilogue == "add" else None
    return x, w, b, residual


def assert_matches_reference(sd, model):
    """The tolerances of test_tokenizer.test_fast_path_equals_reference."""
    x = frames_like_video(8, seed=2)
    ref_tokens, ref_indices = reference_encode(sd, x)
    out = model.encode(x)
    assert ref_indices.unique().numel() > 32
    assert (out.indices == ref_indices).float().mean().item() >= 0.999
    assert (out.tokens - ref_tokens).abs().max().item() <= 1e-5
    with torch.inference_mode():
        z = model.encoder(x, model.latent_tokens)
    torch.testing.assert_close(z, reference_latents(sd, x)[:, :, 0, :].permute(0, 2, 1), rtol=1e-4, atol=1e-4)


def test_rows_bucket():
    assert [kernels.rows_bucket(r) for r in (1, 2, 3, 32, 33, 200, 256, 257, 289, 4624)] == \
        [1, 2, 4, 32, 64, 256, 256, 256, 256, 256]


@requires_onednn
def test_choice_is_timed_once_per_key_and_cached(small_model, monkeypatch):
    sd, model = small_model
    timings = count_timings(monkeypatch)
    x = frames_like_video(3, seed=7)
    first = model.encode(x).indices
    choices = kernels.kernel_choices()
    # per block: q/k/v (none), out_proj (add), c_fc (gelu), c_proj (add); the last block's k/v and q
    # projections on their own shapes; every block shares one key per shape
    w = SMALL.width
    threads = torch.get_num_threads()
    assert set(choices) == {
        ((3 * w, w), 256, torch.float32, threads, "none"), ((w, w), 256, torch.float32, threads, "add"),
        ((4 * w, w), 256, torch.float32, threads, "gelu"), ((w, 4 * w), 256, torch.float32, threads, "add"),
        ((2 * w, w), 256, torch.float32, threads, "none"), ((w, w), 128, torch.float32, threads, "none"),
        ((w, w), 128, torch.float32, threads, "add"), ((w, 4 * w), 128, torch.float32, threads, "add"),
        ((4 * w, w), 128, torch.float32, threads, "gelu"),
    }
    assert len(timings) == len(choices)
    for choice in choices.values():
        assert choice.kernel in kernels.KERNELS
        assert choice.seconds[choice.kernel] == min(choice.seconds.values())
    assert torch.equal(model.encode(x).indices, first)  # same choices, same kernels, same result
    assert len(timings) == len(choices)  # no second timing


@requires_onednn
def test_the_key_holds_threads_and_dtype(monkeypatch):
    timings = count_timings(monkeypatch)
    x, w, b, _ = operands()
    kernels.kernel_for(x, w, b, "none")
    kernels.kernel_for(x, w, b, "none")
    assert len(timings) == 1
    before = torch.get_num_threads()
    torch.set_num_threads(1 if before > 1 else 2)
    try:
        kernels.kernel_for(x, w, b, "none")
    finally:
        torch.set_num_threads(before)
    assert len(timings) == 2
    kernels.kernel_for(x[:, :10], w, b, "none")  # another rows bucket
    kernels.kernel_for(x, w, b, "gelu")  # another epilogue
    assert len(timings) == 4


@pytest.mark.parametrize("mode", ["onednn", "aten", "auto"])
def test_forced_modes_match_the_reference(small_model, monkeypatch, mode):
    if mode == "onednn" and not kernels.onednn_linear_available():
        pytest.skip("oneDNN's linear is not available in this torch build")
    sd, model = small_model
    monkeypatch.setenv(kernels.ENV_VAR, mode)
    timings = count_timings(monkeypatch)
    used = []
    for name in ("onednn_linear", "aten_linear"):
        original = getattr(kernels, name)
        monkeypatch.setattr(kernels, name, lambda *a, _f=original, _n=name: used.append(_n) or _f(*a))
    assert_matches_reference(sd, model)
    if mode == "auto":
        assert timings
    else:
        assert not timings and set(used) == {f"{mode}_linear"}


@requires_onednn
@pytest.mark.parametrize("slow", ["onednn", "aten"])
@pytest.mark.parametrize("epilogue", ["none", "gelu", "add"])
def test_the_slower_kernel_is_not_chosen(monkeypatch, slow, epilogue):
    monkeypatch.setattr(kernels, f"{slow}_linear", slowed(getattr(kernels, f"{slow}_linear")))
    x, w, b, residual = operands(epilogue=epilogue)
    kept = residual.clone() if residual is not None else None
    fast = "aten" if slow == "onednn" else "onednn"
    assert kernels.kernel_for(x, w, b, epilogue, residual) == fast
    (choice,) = kernels.kernel_choices().values()
    assert choice.seconds[slow] >= DELAY_S > choice.seconds[fast]
    if residual is not None:
        assert torch.equal(residual, kept)  # the timing ran on a copy of the residual


@requires_onednn
@pytest.mark.parametrize("slow", ["onednn", "aten"])
def test_the_tokenizer_runs_the_faster_kernel(small_model, monkeypatch, slow):
    sd, model = small_model
    monkeypatch.setattr(kernels, f"{slow}_linear", slowed(getattr(kernels, f"{slow}_linear")))
    model.encode(frames_like_video(1, seed=8))
    fast = "aten" if slow == "onednn" else "onednn"
    choices = kernels.kernel_choices()
    assert {c.kernel for c in choices.values()} == {fast}, {k: c for k, c in choices.items() if c.kernel != fast}


@pytest.mark.parametrize("mode", ["auto", "onednn"])
def test_the_probe_vetoes_a_wrong_onednn_kernel(small_model, monkeypatch, mode):
    sd, model = small_model
    original = kernels.onednn_linear
    monkeypatch.setattr(kernels, "onednn_linear", lambda *a: original(*a) + 1e-3)
    # slower F.linear: the timing alone would pick the wrong kernel
    monkeypatch.setattr(kernels, "aten_linear", slowed(kernels.aten_linear))
    monkeypatch.setenv(kernels.ENV_VAR, mode)
    x, w, b, _ = operands()
    assert not model_module.onednn_linear_available()
    assert kernels.kernel_for(x, w, b, "none") == "aten"
    assert_matches_reference(sd, model)
    assert not kernels.kernel_choices()  # nothing was timed


def test_use_onednn_false_keeps_onednn_out(small_model, monkeypatch):
    sd, model = small_model
    monkeypatch.setattr(model_module, "USE_ONEDNN", False)
    monkeypatch.setenv(kernels.ENV_VAR, "onednn")
    timings = count_timings(monkeypatch)
    monkeypatch.setattr(kernels, "onednn_linear", lambda *a: pytest.fail("oneDNN ran with USE_ONEDNN off"))
    assert_matches_reference(sd, model)
    assert not timings


def test_a_bad_override_is_named(monkeypatch):
    monkeypatch.setenv(kernels.ENV_VAR, "mkl")
    x, w, b, _ = operands()
    with pytest.raises(ValueError, match="IMA_LINEAR_KERNEL='mkl'"):
        kernels.kernel_for(x, w, b, "none")


def test_kernels_agree_with_f_linear():
    for epilogue in kernels.EPILOGUES:
        x, w, b, residual = operands(epilogue=epilogue)
        want = F.linear(x, w, b)
        want = F.gelu(want) if epilogue == "gelu" else want + residual if epilogue == "add" else want
        for name in kernels.KERNELS:
            if name == "onednn" and not kernels.onednn_linear_available():
                continue
            got = kernels.run_kernel(name, x, w, b, epilogue, None if residual is None else residual.clone())
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
