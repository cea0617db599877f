"""IM-Animation in pure PyTorch: motion tokenizer, retargeting, expression control, training.

Never imports ComfyUI; the nodes in ../nodes are a thin layer over this package."""

from .tokenizer import MotionTokenizer, MotionTokenizerConfig, encode_frames, preprocess_frames

__all__ = ["MotionTokenizer", "MotionTokenizerConfig", "encode_frames", "preprocess_frames"]
