"""encode_frames: chunking equals one-shot encoding, progress/interrupt, bounded memory on long clips."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import im_animation_core.tokenizer.encode as encode_module
from im_animation_core import MotionTokenizer, MotionTokenizerConfig, encode_frames, preprocess_frames
from im_animation_core.errors import InputError
from im_animation_core.tokenizer import chunk_size_for_memory
from im_animation_core.tokenizer.testing import random_state_dict

REPO = Path(__file__).resolve().parents[2]
TINY = MotionTokenizerConfig(width=64, layers=2, heads=1, codebook_size=256)


class LazyClip:
    """A clip that makes frames only when sliced (like a video reader) and records the slices asked for."""

    def __init__(self, n: int, height: int = 48, width: int = 80) -> None:
        self.n, self.height, self.width = n, height, width
        self.base = torch.linspace(0, 1, height * width * 3).reshape(height, width, 3)
        self.slices: list[tuple[int, int]] = []

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: slice) -> torch.Tensor:
        start, stop, _ = index.indices(self.n)
        self.slices.append((start, stop))
        phase = torch.arange(start, stop, dtype=torch.float32)[:, None, None, None] / self.n
        return (self.base + phase) % 1.0


@pytest.fixture(scope="module")
def tiny():
    return MotionTokenizer.from_state_dict(random_state_dict(TINY, seed=3))


def test_chunked_equals_one_shot_and_reports_progress(tiny):
    frames = torch.rand(7, 96, 64, 3)
    calls = []
    tokens, indices = encode_frames(tiny, frames, chunk_size=3,
                                    on_chunk=lambda done, total: calls.append((done, total)))
    assert calls == [(3, 7), (6, 7), (7, 7)]
    assert tokens.shape == (7, 32, 12) and tokens.dtype == torch.float32 and tokens.device.type == "cpu"
    assert indices.shape == (7, 32) and indices.dtype == torch.int64
    once = tiny.encode(preprocess_frames(frames))
    assert torch.equal(indices, once.indices)
    torch.testing.assert_close(tokens, once.tokens, rtol=0, atol=1e-6)
    auto_tokens, auto_indices = encode_frames(tiny, frames, chunk_size=None)
    assert torch.equal(auto_indices, indices)


class Interrupted(Exception):
    pass


def test_exception_from_on_chunk_stops_and_propagates(tiny):
    clip = LazyClip(10)

    def interrupt(done, total):
        raise Interrupted(f"stopped at {done}/{total}")

    with pytest.raises(Interrupted, match="stopped at 4/10"):
        encode_frames(tiny, clip, chunk_size=4, dtype=torch.float64, on_chunk=interrupt)
    assert clip.slices == [(0, 4)]
    assert tiny.param_dtype == torch.float32  # restored even though the call was interrupted


def test_only_one_chunk_is_sliced_and_preprocessed_at_a_time(tiny, monkeypatch):
    seen = []
    real = encode_module.preprocess_frames

    def spy(frames, size=256):
        seen.append(frames.shape[0])
        return real(frames, size=size)

    monkeypatch.setattr(encode_module, "preprocess_frames", spy)
    clip = LazyClip(23)
    tokens, _ = encode_frames(tiny, clip, chunk_size=5)
    assert clip.slices == [(0, 5), (5, 10), (10, 15), (15, 20), (20, 23)]
    assert seen == [5, 5, 5, 5, 3]
    assert tokens.shape == (23, 32, 12)


def test_device_and_dtype_overrides_are_undone(tiny):
    frames = torch.rand(3, 32, 32, 3)
    tokens64, indices64 = encode_frames(tiny, frames, 2, device="cpu", dtype=torch.float64)
    assert tiny.param_dtype == torch.float32
    assert tokens64.dtype == torch.float32
    assert (indices64 == encode_frames(tiny, frames, 2)[1]).float().mean() >= 0.99


def test_bad_clips(tiny):
    with pytest.raises(InputError, match="no frames"):
        encode_frames(tiny, torch.zeros(0, 8, 8, 3), 4)
    with pytest.raises(InputError, match="chunk size"):
        encode_frames(tiny, torch.rand(2, 8, 8, 3), 0)
    with pytest.raises(InputError, match="alpha"):
        encode_frames(tiny, torch.rand(2, 8, 8, 4), 4)

    class Broken(LazyClip):
        def __getitem__(self, index):
            return super().__getitem__(index)[:1]

    with pytest.raises(InputError, match=r"frames\[0:4\] must be an IMAGE tensor of 4 frames"):
        encode_frames(tiny, Broken(6), 4)


def test_chunk_size_for_memory():
    large = MotionTokenizerConfig.large()
    sizes = [chunk_size_for_memory(free, large, 2) for free in (0, 2**28, 2**30, 2**32, 2**36)]
    assert sizes[0] == 1 and sizes[-1] == 64
    assert sizes == sorted(sizes) and all(isinstance(s, int) for s in sizes)
    assert 10 <= chunk_size_for_memory(2**31, large, 2) <= 64  # 2 GiB free on a GPU: a useful chunk
    assert chunk_size_for_memory(2**31, large, 4) <= chunk_size_for_memory(2**31, large, 2)
    with_frames = chunk_size_for_memory(2**30, large, 2, frame_bytes=1920 * 1080 * 3 * 4)
    assert with_frames < chunk_size_for_memory(2**30, large, 2)


MEMORY_SCRIPT = textwrap.dedent("""
    import json, resource, sys
    import torch
    from im_animation_core import MotionTokenizer, MotionTokenizerConfig, encode_frames

    torch.set_num_threads(1)  # a tiny model: one thread is fastest and immune to a busy machine

    class LazyClip:
        def __init__(self, n):
            self.n = n
            self.base = torch.linspace(0, 1, 512 * 512 * 3).reshape(512, 512, 3)
        def __len__(self):
            return self.n
        def __getitem__(self, index):
            start, stop, _ = index.indices(self.n)
            fade = 1 - 0.5 * torch.arange(start, stop, dtype=torch.float32)[:, None, None, None] / self.n
            return self.base * fade  # a fresh [k,512,512,3] tensor, like a decoder's output

    def peak_mib():
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    torch.manual_seed(0)
    model = MotionTokenizer(MotionTokenizerConfig(width=64, layers=1, heads=1, codebook_size=256))
    encode_frames(model, LazyClip(32), 16)  # warm-up: one chunk's worth of every buffer
    before = peak_mib()
    tokens, indices = encode_frames(model, LazyClip(2000), 16)
    print(json.dumps({"before": before, "after": peak_mib(), "frames": tokens.shape[0],
                      "distinct": int(indices.unique().numel())}))
""")


def test_2000_frame_512px_clip_encodes_in_bounded_memory():
    """Peak RSS of a fresh process may grow by far less than the preprocessed clip (2000 x 3 x 256 x 256
    float32 = 1.5 GiB), let alone the decoded clip (6 GiB), while a 2000-frame 512x512 clip is encoded."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    result = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT], capture_output=True, text=True, env=env,
                            timeout=120, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    stats = json.loads(result.stdout.strip().splitlines()[-1])
    assert stats["frames"] == 2000
    growth = stats["after"] - stats["before"]
    preprocessed_clip_mib = 2000 * 3 * 256 * 256 * 4 / 2**20
    assert growth < 200, (f"peak RSS grew by {growth:.0f} MiB "
                          f"(whole preprocessed clip: {preprocessed_clip_mib:.0f} MiB)")
