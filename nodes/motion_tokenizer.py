"""Load Motion Tokenizer and Encode Driving Video."""

import math

import comfy.model_management as mm
import comfy.utils
import torch
from comfy_api.latest import io

from ..im_animation_core.motion import MotionTokens, TokenizerRecord
from ..im_animation_core.tokenizer import MotionTokenizer, chunk_size_for_memory, encode_frames
from . import model_files, socket_checks, types
from .devices import DTYPES, inference_dtype, interrupt_check, loaded, patcher_for
from .errors import user_errors


class LoadMotionTokenizer(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            **types.ALIASES,
            node_id="IMA_LoadMotionTokenizer",
            display_name="Load Motion Tokenizer",
            category=types.CATEGORY,
            description="Loads the IM-Animation motion encoder (ViT + VQ codebook, 32 motion tokens per frame), "
                        "e.g. the released motion_encoder_latest.safetensors, from models/im_animation/.",
            inputs=[
                io.Combo.Input("tokenizer_name", options=model_files.file_list(),
                               tooltip="Motion encoder weights in models/im_animation/. Sizes come from "
                                       "<file name>.yaml beside the file, else from the folder's config.yaml "
                                       "when it fits these weights."),
                io.Combo.Input("dtype", options=DTYPES, default="auto",
                               tooltip="Compute precision. auto: fp16/bf16 on a GPU, fp32 on the CPU."),
            ],
            outputs=[types.MotionTokenizer.Output(display_name="motion_tokenizer")],
        )

    @classmethod
    def execute(cls, tokenizer_name, dtype) -> io.NodeOutput:
        path = model_files.full_path("Load Motion Tokenizer", tokenizer_name)
        model_files.check_float_weights("Load Motion Tokenizer", tokenizer_name, path)
        with user_errors("Load Motion Tokenizer"):
            model = MotionTokenizer.from_file(path, dtype=inference_dtype(dtype))
            # the tokens it encodes carry this, for Retarget to Identity to check against the modules' record
            model.tokenizer_record = TokenizerRecord.of_file(path)
        return io.NodeOutput(patcher_for(model.eval()))


class EncodeDrivingVideo(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            **types.ALIASES,
            node_id="IMA_EncodeDrivingVideo",
            display_name="Encode Driving Video",
            category=types.CATEGORY,
            description="Turns the frames of a driving video into 32 quantised motion tokens per frame. Encodes "
                        "in chunks sized to free memory, so long clips do not run out of memory.",
            inputs=[
                types.MotionTokenizer.Input("motion_tokenizer", tooltip="From Load Motion Tokenizer."),
                io.Image.Input("frames", tooltip="Driving video frames, e.g. from Load Video -> Get Video "
                                                 "Components, or any IMAGE batch."),
                io.Float.Input("fps", default=24.0, min=0.0, max=240.0, step=0.001,
                               tooltip="Frame rate of the input frames (wire Get Video Components' fps). "
                                       "Used to time the output video."),
                io.Int.Input("stride", default=1, min=1, max=64,
                             tooltip="Keep every n-th frame (2 halves the frame rate)."),
                io.Int.Input("max_frames", default=0, min=0, max=10000,
                             tooltip="Keep at most this many frames after striding; 0 keeps all."),
            ],
            outputs=[types.MotionTokens.Output(display_name="motion_tokens")],
        )

    @classmethod
    def execute(cls, motion_tokenizer, frames, fps, stride, max_frames) -> io.NodeOutput:
        node = "Encode Driving Video"
        socket_checks.tokenizer(node, "motion_tokenizer", motion_tokenizer)
        socket_checks.image(node, "frames", frames)
        if not math.isfinite(fps) or fps < 0:
            raise ValueError(f"{node}: fps is {fps}; give the driving video's frame rate (e.g. wire Get Video "
                             "Components' fps), or 0 when unknown.")
        kept, indices = frames[::stride], torch.arange(frames.shape[0])[::stride]  # views: no copy of the clip
        if max_frames:
            kept, indices = kept[:max_frames], indices[:max_frames]
        if indices.numel() == 0:
            raise ValueError(f"{node}: the frames input is empty: connect a video with at least one frame")
        model = loaded(motion_tokenizer)
        device = motion_tokenizer.load_device
        dtype = next(model.parameters()).dtype
        chunk = chunk_size_for_memory(mm.get_free_memory(device), model.config, dtype.itemsize)
        pbar = comfy.utils.ProgressBar(indices.numel())

        def on_chunk(done, total):
            pbar.update_absolute(done, total)
            interrupt_check()

        with user_errors(node):
            tokens, codes = encode_frames(model, kept, chunk, device=device, dtype=dtype,
                                          on_chunk=on_chunk)
        return io.NodeOutput(MotionTokens(tokens=tokens, indices=codes, frame_indices=indices,
                                          fps=fps / stride, source_frame_count=int(frames.shape[0]),
                                          tokenizer=getattr(model, "tokenizer_record", None)))
