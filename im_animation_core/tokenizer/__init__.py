"""Motion tokenizer: the released IM-Animation motion encoder + VQ codebook, preprocessing and encoding."""

from .config import MODEL_SIZES, MotionTokenizerConfig, read_config_yaml
from .encode import chunk_size_for_memory, encode_frames, free_memory_bytes
from .model import MotionEncoding, MotionTokenizer
from .preprocess import preprocess_frames
from .reference import reference_encode
from .titok import load_titok_init

__all__ = [
    "MODEL_SIZES",
    "MotionEncoding",
    "MotionTokenizer",
    "MotionTokenizerConfig",
    "chunk_size_for_memory",
    "encode_frames",
    "free_memory_bytes",
    "load_titok_init",
    "preprocess_frames",
    "read_config_yaml",
    "reference_encode",
]
