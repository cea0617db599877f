"""Chunked encoding of whole driving clips with memory bounded by one chunk, and batches of clips through any
motion encoder (the trainers' and the evaluation's ``encode_clips``)."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, Protocol

import torch
from einops import rearrange
from torch import nn

from ..errors import InputError
from .config import MotionTokenizerConfig
from .model import MotionTokenizer
from .preprocess import PAD_BUDGET_BYTES, preprocess_frames


class FrameSource(Protocol):
    """Anything with ``len()`` whose ``[start:stop]`` slice is an IMAGE tensor [stop-start,H,W,3]: a
    tensor, or a lazy reader that decodes frames only when sliced."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: slice) -> torch.Tensor: ...


def encode_frames(tokenizer: MotionTokenizer, frames: torch.Tensor | FrameSource, chunk_size: int | None,
                  device: torch.device | str | None = None, dtype: torch.dtype | None = None,
                  on_chunk: Callable[[int, int], Any] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Encode a clip chunk by chunk: slice ``chunk_size`` frames, preprocess, encode, copy tokens to CPU.

    frames: [T,H,W,3] float RGB in [0,1] (ComfyUI IMAGE), or a lazy FrameSource. Only one chunk of frames is
        ever sliced, moved to the device and preprocessed at a time, so beyond the input itself memory is
        bounded by one chunk plus the outputs (1.5 KiB per frame at the released size).
    chunk_size: frames per chunk (>= 1); None picks one from free memory (:func:`chunk_size_for_memory`).
    device / dtype: where and in what precision to run; default the tokenizer's. When they differ from the
        tokenizer's, the tokenizer is moved for the call and moved back afterwards.
    on_chunk: called as ``on_chunk(frames_done, total_frames)`` after each chunk; an exception it raises
        (e.g. an interrupt) stops encoding and propagates unchanged.
    Returns (tokens [T,L,C] float32 CPU, indices [T,L] int64 CPU); L = 32 and C = 12 for the released model.
    Raises InputError for an empty clip, a bad chunk size or bad frames (see preprocess_frames).
    """
    total = len(frames)
    if total == 0:
        raise InputError("the driving video has no frames: check the video loader, stride and max frames.")
    config = tokenizer.config
    run_device = torch.device(device) if device is not None else tokenizer.param_device
    run_dtype = dtype or tokenizer.param_dtype
    if chunk_size is None:
        chunk_size = chunk_size_for_memory(free_memory_bytes(run_device), config,
                                           torch.finfo(run_dtype).bits // 8)
    if int(chunk_size) < 1:
        raise InputError(f"chunk size must be at least 1 frame, got {chunk_size}.")
    chunk_size = int(chunk_size)
    tokens = torch.empty(total, config.num_latent_tokens, config.token_size, dtype=torch.float32)
    indices = torch.empty(total, config.num_latent_tokens, dtype=torch.int64)

    old_device, old_dtype = tokenizer.param_device, tokenizer.param_dtype
    moved = (run_device, run_dtype) != (old_device, old_dtype)
    if moved:
        tokenizer.to(device=run_device, dtype=run_dtype)
    try:
        for start in range(0, total, chunk_size):
            stop = min(start + chunk_size, total)
            batch = frames[start:stop]
            if not isinstance(batch, torch.Tensor) or batch.ndim != 4 or batch.shape[0] != stop - start:
                got = list(batch.shape) if isinstance(batch, torch.Tensor) else type(batch).__name__
                raise InputError(f"frames[{start}:{stop}] must be an IMAGE tensor of {stop - start} frames "
                                 f"[n,H,W,3], got {got}.")
            pixels = preprocess_frames(batch.to(run_device), size=config.image_size)
            del batch
            encoding = tokenizer.encode(pixels)
            del pixels
            tokens[start:stop] = encoding.tokens.to("cpu", torch.float32)
            indices[start:stop] = encoding.indices.to("cpu")
            del encoding
            if on_chunk is not None:
                on_chunk(stop, total)
    finally:
        if moved:
            tokenizer.to(device=old_device, dtype=old_dtype)
    return tokens, indices


def activation_bytes_per_frame(config: MotionTokenizerConfig, dtype_bytes: int) -> int:
    """Estimated peak working memory (bytes) of encoding one frame, weights excluded.

    Transformer block at its widest (residual, LayerNorm output, q/k/v and their head-split copies,
    attention output, projections, MLP hidden before and after GELU) in the run dtype, attention scores in
    float32 (the unfused fallback materialises them), the fp32 and run-dtype copies of the 3xSxS input,
    and the float32 codebook distances of the quantiser.
    """
    s, w = config.seq_len, config.width
    hidden = w * config.mlp_ratio
    block = (10 * s * w + 2 * s * hidden) * dtype_bytes + config.heads * s * s * 4
    pixels = 3 * config.image_size ** 2 * (4 + dtype_bytes)
    quantise = 2 * config.num_latent_tokens * config.codebook_size * 4
    return block + pixels + quantise


def chunk_size_for_memory(free_bytes: int, config: MotionTokenizerConfig, dtype_bytes: int,
                          frame_bytes: int = 0, safety: float = 0.5, max_chunk: int = 64) -> int:
    """Frames per chunk that fit in ``safety`` x ``free_bytes`` (bytes free on the run device).

    dtype_bytes: bytes per element of the run dtype (2 for fp16/bf16, 4 for fp32). frame_bytes: bytes of
    one input frame as it is moved to the device (e.g. 3*H*W*4 for a float32 IMAGE on a GPU; 0 when the
    frames are already there). The preprocessing pad buffer (a fixed budget) is reserved first. Returns a
    value in [1, max_chunk]; 1 when memory is very low (encoding then proceeds a frame at a time).
    """
    budget = free_bytes * safety - PAD_BUDGET_BYTES
    per_frame = activation_bytes_per_frame(config, dtype_bytes) + frame_bytes
    return int(max(1, min(max_chunk, budget // per_frame)))


def free_memory_bytes(device: torch.device | str) -> int:
    """Free memory of a device in bytes: CUDA free memory, or the host's available physical memory."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX hosts
        return 4 * 1024 ** 3


def encode_clips(encoder: nn.Module, clips: torch.Tensor, trainable: bool
                 ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """clips [B,T,H,W,3] -> (tokens [B,T,L,C], aux). A frozen encoder runs without gradient.

    aux: the encoder's losses ("vq") and "token_spread", a detached diagnostic: the std of each token channel
    across the B*T frames, averaged. Near 0 the encoder says the same for every frame (a collapsed
    codebook): it carries no motion, and nothing downstream can learn to follow the driver."""
    b = clips.shape[0]
    frames = rearrange(clips, "b t h w c -> (b t) h w c")
    if trainable:
        tokens, losses, _ = encoder(frames)
    else:
        with torch.no_grad():
            tokens, _, _ = encoder(frames)
        losses = {}
    losses = {**losses, "token_spread": token_spread(tokens)}
    return rearrange(tokens, "(b t) l c -> b t l c", b=b), losses


def token_spread(tokens: torch.Tensor) -> torch.Tensor:
    """tokens [N,L,C] of N frames -> scalar: the std over frames of each token channel, averaged (0-dim,
    detached). A single frame has no spread: 0."""
    t = tokens.detach().float()
    return t.std(0).mean() if t.shape[0] > 1 else t.new_zeros(())
