"""The trained IM-Animation modules as one unit, and their checkpoint format.

File format (safetensors), version 1:
    retarget.*                 RetargetTransformer
    expression_encoder.*       ExpressionEncoder
    expression_blocks.{i}.*    ExpressionBlock i, run after DiT block 6*(i+1)-1
    motion_patch.{weight,bias} the motion channels of the DiT patch embedding [dim,C_r,1,2,2]
metadata: format = "im-animation-modules", format_version = "1", and JSON configs "retarget",
"expression", "dit" ({"dim", "heads", "depth", "latent_channels", "clean_reference"}) naming the sizes
and how the DiT was trained to see the reference frame (files without "clean_reference": see DiTSpec);
optionally "motion_tokenizer", the motion tokenizer the modules were trained with (motion.TokenizerRecord;
files written before it was recorded lack it).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass

import torch
from safetensors.torch import save_file
from torch import nn

from .checkpoints import check_finite, read_checked, shape_mismatch, sizes_from_json
from .errors import CheckpointError
from .expression import ExpressionBlock, ExpressionConfig, ExpressionEncoder
from .injection import motion_conv_for
from .motion import TOKENIZER_KEY, TokenizerRecord
from .retarget import RetargetConfig, RetargetTransformer

FORMAT = "im-animation-modules"
FORMAT_VERSION = "1"
EXPRESSION_EVERY = 6  # one expression block after every 6 DiT blocks (paper, supplementary)
# Length of the clips the modules were trained on, for files that do not record it (metadata "clip_frames"):
# every modules file trained so far (the demo set) was trained on 17-frame clips.
DEFAULT_CLIP_FRAMES = 17
# Largest weight magnitude a modules file may hold. Trained modules stay in single digits (the demo set's
# largest is about 4); weights beyond this are damaged or hostile and would make the DiT's output explode
# into a black video while every value is still finite.
MAX_WEIGHT_MAGNITUDE = 1e4


@dataclass
class DiTSpec:
    """The sizes of the Wan DiT the modules were made for, and how it was trained to see the reference frame.

    clean_reference: True when the DiT saw the reference (identity) latent frame clean with timestep 0, as
    Wan2.2 TI2V does; False when it saw it noised at the current sigma (KSampler's inpainting on a
    Wan2.1-family model). None (files written before the field existed) means what those runs did: clean for
    48-channel latents only."""

    dim: int
    heads: int
    depth: int
    latent_channels: int
    clean_reference: bool | None = None

    def __post_init__(self):
        if self.clean_reference is None:
            self.clean_reference = self.latent_channels == 48

    def sizes(self) -> dict[str, int]:
        """The fields that fix tensor shapes (what must agree between stages)."""
        return {"dim": self.dim, "heads": self.heads, "depth": self.depth, "latent_channels": self.latent_channels}

    @property
    def expression_block_indices(self) -> list[int]:
        """DiT block indices after which the expression blocks run: 5, 11, 17, 23, 29 for 30 layers."""
        return [EXPRESSION_EVERY * (i + 1) - 1 for i in range(self.depth // EXPRESSION_EVERY)]


class IMAnimationModules(nn.Module):
    def __init__(self, retarget: RetargetConfig, expression: ExpressionConfig, dit: DiTSpec):
        super().__init__()
        if retarget.latent_channels != dit.latent_channels:
            raise CheckpointError(
                f"retarget latent channels {retarget.latent_channels} differ from the DiT's {dit.latent_channels}"
            )
        self.dit = dit
        self.retarget = RetargetTransformer(retarget)
        self.expression_encoder = ExpressionEncoder(expression)
        self.expression_blocks = nn.ModuleList(
            ExpressionBlock(dit.dim, dit.heads, expression.width) for _ in dit.expression_block_indices
        )
        self.motion_patch = motion_conv_for(dit.dim, retarget.out_channels)
        # Driving frames retargeted at once (pipeline.retarget): the training clip length, since the
        # retargeter drifts on sequences much longer than it was trained on.
        self.clip_frames = DEFAULT_CLIP_FRAMES
        # The motion tokenizer these modules were trained with (None: not recorded), and the file they were read
        # from, for Retarget to Identity's check and messages.
        self.tokenizer_record: TokenizerRecord | None = None
        self.file_name = "(not from a file)"

    def metadata(self) -> dict[str, str]:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "retarget": json.dumps(self.retarget.config.to_dict()),
            "expression": json.dumps(self.expression_encoder.config.to_dict()),
            "dit": json.dumps(asdict(self.dit)),
            # Only when it differs from what files without the key mean, so that those files' bytes stay as
            # they were.
            **({"clip_frames": str(self.clip_frames)} if self.clip_frames != DEFAULT_CLIP_FRAMES else {}),
            **({TOKENIZER_KEY: self.tokenizer_record.to_json()} if self.tokenizer_record is not None else {}),
        }

    def save(self, path: str, dtype: torch.dtype = torch.float32) -> None:
        sd = {k: v.detach().to("cpu", dtype).contiguous() for k, v in self.state_dict().items()}
        save_file(sd, path, metadata=self.metadata())

    @classmethod
    def from_file(cls, path: str, allow_ablation: bool = False) -> IMAnimationModules:
        """Load a modules file (format above); see read_modules_file."""
        return read_modules_file(path, allow_ablation)[0]


def check_magnitude(tensors: dict[str, torch.Tensor], source: str, limit: float = MAX_WEIGHT_MAGNITUDE) -> None:
    """Raise CheckpointError naming the tensors with a weight of magnitude above ``limit``."""
    bad = []
    for name, t in tensors.items():
        if t.is_floating_point() and t.numel():
            peak = float(t.detach().abs().amax())
            if peak > limit:
                bad.append(f"{name} ({peak:.3g})")
    if bad:
        shown = ", ".join(bad[:8]) + (f" and {len(bad) - 8} more" if len(bad) > 8 else "")
        raise CheckpointError(f"{source} has weights far beyond what training gives (above {limit:g}) in tensor(s) "
                              f"{shown}. The file is damaged or not a trained modules file: use another file.")


def read_modules_file(path: str, allow_ablation: bool = False) -> tuple[IMAnimationModules, dict[str, str]]:
    """(modules, the file's metadata) of a modules file (format above), opened once. Raises CheckpointError
    naming the file and what is wrong. Files of a training ablation (metadata ``im_animation_retarget`` other
    than mask_tokens) are refused unless allow_ablation.

    Nothing is allocated from the metadata's sizes: the model is built on the meta device and its shapes
    compared with the shapes in the file's header, so a file whose metadata claims huge sizes costs nothing
    before it is refused; only then are the tensors read (their size is the file's own)."""
    source = f"IM-Animation modules file '{os.path.basename(path)}'"
    built: list[IMAnimationModules] = []

    def check(meta: dict[str, str], shapes: dict[str, tuple[int, ...]], _dtypes) -> None:
        if meta.get("format") != FORMAT:
            raise CheckpointError(
                f"'{os.path.basename(path)}' is not an IM-Animation modules file (no '{FORMAT}' format in its "
                "metadata). Choose the file written by this project's trainer, not a DiT, VAE or motion tokenizer."
            )
        if meta.get("im_animation_retarget", "mask_tokens") != "mask_tokens" and not allow_ablation:
            raise CheckpointError(
                f"{source} holds the '{meta['im_animation_retarget']}' retargeting ablation, a training experiment "
                "that the nodes do not run; load it with im_animation_core.train.load_modules."
            )
        if meta.get("format_version") != FORMAT_VERSION:
            raise CheckpointError(f"{source} has format version {meta.get('format_version')}; this pack reads "
                                  f"version {FORMAT_VERSION}. Update the pack or re-export the file.")
        configs = (sizes_from_json(RetargetConfig, meta.get("retarget"), "retarget", source),
                   sizes_from_json(ExpressionConfig, meta.get("expression"), "expression", source),
                   sizes_from_json(DiTSpec, meta.get("dit"), "dit", source))
        try:
            with torch.device("meta"):
                model = IMAnimationModules(*configs)
        except CheckpointError as e:
            raise CheckpointError(f"{source}: {e}") from None
        except (ValueError, TypeError, RuntimeError, ZeroDivisionError, OverflowError) as e:
            raise CheckpointError(f"{source} has size metadata that makes no model ({e}); re-export the "
                                  "file.") from None
        expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        missing, unexpected, wrong = shape_mismatch(expected, shapes)
        if missing or unexpected or wrong:
            missing = sorted(missing)
            wrong = [f"{k}: file {shapes[k]} vs metadata {expected[k]}" for k in wrong]
            raise CheckpointError(
                f"{source} does not match its own size metadata: missing {missing[:8]}, unexpected "
                f"{unexpected[:8]}, wrong shapes {wrong[:8]}"
            )
        clip = meta.get("clip_frames", str(DEFAULT_CLIP_FRAMES))
        if not clip.isdigit() or int(clip) % 4 != 1:
            raise CheckpointError(f"{source}: metadata 'clip_frames' = {clip!r} is not a clip length (4k+1 "
                                  "frames); re-export the file.")
        model.clip_frames = int(clip)
        model.tokenizer_record = TokenizerRecord.from_json(meta.get(TOKENIZER_KEY), source)
        model.file_name = os.path.basename(path)
        built.append(model)

    meta, sd = read_checked(path, "IM-Animation modules", check)
    model = built[0]
    check_finite(sd, source)
    check_magnitude(sd, source)
    model.load_state_dict({k: v.float() for k, v in sd.items()}, assign=True)
    return model, meta
