"""The motion data that flows between nodes, and the record of which motion tokenizer made it."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import torch

# Metadata key of a TokenizerRecord (JSON) in modules files (the tokenizer they were trained with) and in motion
# tokens files (the tokenizer that encoded them).
TOKENIZER_KEY = "motion_tokenizer"


@dataclass(frozen=True)
class TokenizerRecord:
    """Which motion tokenizer file something was made or trained with.

    name: the tokenizer file's name when recorded (the trainer's output name for a modules file).
    sha256: hex SHA-256 of the whole tokenizer file, as ``sha256sum`` prints it.
    width, layers, num_latent_tokens (tokens per frame), token_size (channels per token), codebook_size,
    patch_size: the sizes its tensor shapes fix (MotionTokenizerConfig's fields of those names), read from the
    file's header, so the trainer and the nodes derive them alike whatever config.yaml says.
    """

    name: str
    sha256: str
    width: int
    layers: int
    num_latent_tokens: int
    token_size: int
    codebook_size: int
    patch_size: int

    SIZES = ("width", "layers", "num_latent_tokens", "token_size", "codebook_size", "patch_size")

    @classmethod
    def of_file(cls, path) -> TokenizerRecord:
        """The record of a motion tokenizer file in the released format (already checked by its loader)."""
        import hashlib
        import os
        import re

        from .checkpoints import header

        _, shapes = header(path, "motion tokenizer")
        layers = {m.group(1) for n in shapes if (m := re.match(r"encoder\.transformer\.(\d+)\.", n))}
        latent, codebook = shapes["latent_tokens"], shapes["quantize.embedding.weight"]
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(1 << 22):
                digest.update(chunk)
        return cls(name=os.path.basename(path), sha256=digest.hexdigest(), width=latent[1], layers=len(layers),
                   num_latent_tokens=latent[0], token_size=codebook[1], codebook_size=codebook[0],
                   patch_size=shapes["encoder.patch_embed.weight"][-1])

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str | None, source: str) -> TokenizerRecord | None:
        """The record in a file's metadata (None: the file has none). Raises CheckpointError naming ``source``
        when it is malformed."""
        import re

        from .checkpoints import sizes_from_json
        from .errors import CheckpointError

        if text is None:
            return None
        record = sizes_from_json(cls, text, TOKENIZER_KEY, source)
        # the name is shown in messages: a plain file name of sane length, not text of the file's choosing
        if not isinstance(record.name, str) or not re.fullmatch(r"[^/\\\x00-\x1f]{1,255}", record.name) or \
                not isinstance(record.sha256, str) or not re.fullmatch(r"[0-9a-f]{64}", record.sha256):
            raise CheckpointError(f"{source}: metadata record '{TOKENIZER_KEY}' needs a file name and a 64-digit "
                                  "hex sha256; the file is damaged: write it again.")
        return record

    def sizes(self) -> dict[str, int]:
        return {k: getattr(self, k) for k in self.SIZES}

    def describe(self) -> str:
        return (f"'{self.name}' (width {self.width}, {self.layers} layers, codebook {self.codebook_size}, "
                f"{self.num_latent_tokens} tokens x {self.token_size} channels, SHA-256 {self.sha256[:12]}...)")


@dataclass
class MotionTokens:
    """Quantised motion tokens of a driving clip.

    tokens: [T,N_m,C_m] float32 on the CPU, the l2-normalised codebook vectors (N_m = 32, C_m = 12 for
        the released encoder), one row of N_m tokens per kept driving frame.
    indices: [T,N_m] int64 codebook indices.
    frame_indices: [T] int64, the index in the source clip of each kept frame.
    fps: frames per second of the kept frames (source fps / stride), 0 when unknown.
    source_frame_count: number of frames in the clip the tokens came from.
    tokenizer: the tokenizer that encoded them (None: unknown, e.g. a tokens file written before it was kept).
    """

    tokens: torch.Tensor
    indices: torch.Tensor
    frame_indices: torch.Tensor
    fps: float
    source_frame_count: int
    tokenizer: TokenizerRecord | None = None

    def __len__(self) -> int:
        return int(self.tokens.shape[0])


def check_tokenizer(motion: MotionTokens, trained: TokenizerRecord | None, modules_name: str) -> str | None:
    """Whether ``motion`` comes from the tokenizer that modules ``modules_name`` were trained with (``trained``;
    None: the file does not record it, nothing to check). A tokenizer of other sizes raises InputError naming
    both; the same sizes with another file (a fine-tuned or retrained tokenizer, which the user may mean) return
    a warning naming both; None when they agree or the tokens do not say which tokenizer made them (then only
    their shape is checked)."""
    from .errors import InputError

    if trained is None:
        return None
    used = motion.tokenizer
    shape = tuple(motion.tokens.shape[1:])
    if used is None and shape == (trained.num_latent_tokens, trained.token_size):
        return None
    if used is None or used.sizes() != trained.sizes():
        made_by = (f"motion tokenizer {used.describe()}" if used is not None else
                   f"an unknown motion tokenizer ({shape[0]} tokens x {shape[1]} channels)")
        raise InputError(
            f"the motion tokens were made by {made_by}, but IM-Animation modules '{modules_name}' were trained "
            f"with motion tokenizer {trained.describe()}. Tokens of another tokenizer stand for other motions: in "
            f"Load Motion Tokenizer choose the tokenizer of this model set (the file with that SHA-256), or load "
            f"the IM-Animation modules trained with '{used.name if used else 'that tokenizer'}'.")
    if used.sha256 != trained.sha256:
        return (f"the motion tokens were made by motion tokenizer {used.describe()}, but IM-Animation modules "
                f"'{modules_name}' were trained with motion tokenizer {trained.describe()}: the same sizes, another "
                "file. The run goes on, as a fine-tuned tokenizer may be meant; if it is not, choose the tokenizer "
                "of this model set in Load Motion Tokenizer.")
    return None


MOTION_TOKENS_FORMAT = "im-animation-motion-tokens"


def save_motion_tokens(motion: MotionTokens, path: str) -> None:
    """Write motion tokens as safetensors (tokens, indices, frame_indices; fps, counts and the tokenizer's record
    in the metadata)."""
    from safetensors.torch import save_file

    record = {} if motion.tokenizer is None else {TOKENIZER_KEY: motion.tokenizer.to_json()}
    save_file({"tokens": motion.tokens.contiguous(), "indices": motion.indices.contiguous(),
               "frame_indices": motion.frame_indices.contiguous()}, path,
              metadata={"format": MOTION_TOKENS_FORMAT, "fps": repr(float(motion.fps)),
                        "source_frame_count": str(motion.source_frame_count), **record})


_FLOAT_DTYPES = {"F16", "BF16", "F32", "F64"}
_INT_DTYPES = {"I8", "I16", "I32", "I64", "U8", "U16", "U32"}


_TENSORS = ("tokens", "indices", "frame_indices")


def _header(shapes: dict, dtypes: dict, source: str) -> dict[str, tuple[list[int], str]]:
    """name -> (shape, dtype) of the three tensors, from the file's header only (nothing is read yet)."""
    from .errors import InputError

    missing = sorted(set(_TENSORS) - set(shapes))
    if missing:
        raise InputError(f"{source} lacks the tensor(s) {missing}: it was not written by Save Motion Tokens, "
                         "or it is damaged. Save the motion tokens again.")
    return {n: (list(shapes[n]), dtypes[n]) for n in _TENSORS}


def _check_header(head: dict, source: str) -> None:
    from .errors import InputError

    (tok_shape, tok_dtype), (idx_shape, idx_dtype), (fr_shape, fr_dtype) = (
        head["tokens"], head["indices"], head["frame_indices"])
    if len(tok_shape) != 3 or tok_dtype not in _FLOAT_DTYPES:
        raise InputError(f"{source}: 'tokens' is {tok_dtype} {tok_shape}, expected float [frames, tokens, "
                         "channels]. Save the motion tokens again.")
    frames = tok_shape[0]
    if frames == 0:
        raise InputError(f"{source} holds no frames (an empty tokens file): encode a driving video with at "
                         "least one frame and save it again.")
    if idx_shape != tok_shape[:2] or idx_dtype not in _INT_DTYPES:
        raise InputError(f"{source}: 'indices' is {idx_dtype} {idx_shape}, expected integers {tok_shape[:2]}. "
                         "The file is damaged: save the motion tokens again.")
    if fr_shape != [frames] or fr_dtype not in _INT_DTYPES:
        raise InputError(f"{source}: 'frame_indices' is {fr_dtype} {fr_shape}, expected {frames} integers. The "
                         "file is damaged: save the motion tokens again.")


def _check_values(motion: MotionTokens, source: str) -> None:
    import math

    from .errors import InputError

    if not math.isfinite(motion.fps) or motion.fps < 0:
        raise InputError(f"{source}: fps {motion.fps} is not a frame rate (0 or more). Save the tokens again.")
    if motion.source_frame_count < 1:
        raise InputError(f"{source}: source_frame_count {motion.source_frame_count} is below 1. Save the tokens "
                         "again.")
    frames = motion.frame_indices
    if bool((frames < 0).any()) or bool((frames >= motion.source_frame_count).any()):
        raise InputError(f"{source}: frame indices {int(frames.min())}..{int(frames.max())} fall outside the "
                         f"source clip of {motion.source_frame_count} frames. The file is damaged or edited: "
                         "save the motion tokens again.")
    if frames.numel() > 1 and not bool((frames[1:] > frames[:-1]).all()):
        raise InputError(f"{source}: frame indices are not increasing. Save the motion tokens again.")
    if not bool(torch.isfinite(motion.tokens).all()):
        raise InputError(f"{source}: tensor 'tokens' holds NaN or infinite values, which would animate to a "
                         "black video. The file is damaged: encode the driving video again.")


def load_motion_tokens(path: str) -> MotionTokens:
    """Read a file written by save_motion_tokens, checking shapes (from the header, before reading), frame
    indices and values. Raises InputError naming the file and what is wrong."""
    import os

    from .checkpoints import read_checked
    from .errors import IMAnimationError, InputError

    source = f"motion tokens file '{os.path.basename(path)}'"

    def check(meta: dict[str, str], shapes: dict, dtypes: dict) -> None:
        if meta.get("format") != MOTION_TOKENS_FORMAT:
            raise InputError(f"{source} is not a motion tokens file (written by Save Motion Tokens)")
        _check_header(_header(shapes, dtypes, source), source)

    meta, t = read_checked(path, "motion tokens", check, names=_TENSORS, error=InputError)
    try:
        motion = MotionTokens(tokens=t["tokens"].float(), indices=t["indices"].long(),
                              frame_indices=t["frame_indices"].long(), fps=float(meta["fps"]),
                              source_frame_count=int(meta["source_frame_count"]),
                              tokenizer=TokenizerRecord.from_json(meta.get(TOKENIZER_KEY), source))
    except IMAnimationError:  # a malformed tokenizer record, already naming the file
        raise
    except (KeyError, ValueError) as e:
        raise InputError(f"cannot read {source}: {e}. Is it a complete file written by Save Motion "
                         "Tokens?") from e
    _check_values(motion, source)
    return motion
