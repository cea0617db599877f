"""Motion tokenizer: the released IM-Animation motion encoder + VQ codebook, preprocessing and encoding."""

from .config import MODEL_SIZES, MotionTokenizerConfig, read_config_yaml
from .encode import chunk_size_for_memory, encode_frames, free_memory_bytes
from .model import MotionEncoding, MotionTokenizer
from .preprocess import preprocess_frames
from .reference import reference_encode

__all__ = [
    "MODEL_SIZES",
    "MotionEncoding",
    "MotionTokenizer",
    "MotionTokenizerConfig",
    "chunk_size_for_memory",
    "encode_frames",
    "free_memory_bytes",
    "preprocess_frames",
    "read_config_yaml",
    "reference_encode",
]
