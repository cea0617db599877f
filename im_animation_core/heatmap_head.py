"""Stage-1 heads: motion tokens -> joint heatmaps (paper eq. 3 and 5; training only, also used for previews).

MotionDecoder: a transformer over the N_m motion tokens (projected to its width) followed by J mask tokens;
    "we repeat the mask token J times": one learnable mask token, repeated J times, plus a learnable
    per-joint position embedding so the J outputs can differ. Only the J outputs are kept.
JointDecoder: each joint token -> a small seed map -> x2 transposed-conv stages -> one heatmap per joint.
    The same conv weights decode every joint (the joint identity is in its token).
HeatmapHead: the two together; forward(tokens [B,N_m,C_m]) -> heatmaps [B,J,Hh,Wh].

Sizes are inferred from state-dict shapes (`from_state_dict`); the attention head count, which no shape
shows, is fixed to width // 64 (heads of 64 channels).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from itertools import pairwise

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import nn

from .checkpoints import check_finite, load_safetensors, shape_mismatch
from .errors import CheckpointError, InputError
from .keypoints import NUM_JOINTS
from .layers import TransformerBlock

HEAD_DIM = 64


@dataclass
class MotionDecoderConfig:
    """Motion decoder sizes.

    token_dim: C_m, channels of a motion token (12 for the released encoder).
    num_tokens: N_m, motion tokens per frame (32).
    num_joints: J, mask tokens / outputs (62 = 20 body + 2 x 21 hand joints).
    width: D, transformer width, a multiple of 64 (attention heads of 64 channels: width // 64 heads,
        fixed by the width so that it follows from the weight shapes); depth: blocks;
    mlp_ratio: MLP hidden size / width.
    """

    token_dim: int = 12
    num_tokens: int = 32
    num_joints: int = NUM_JOINTS
    width: int = 256
    depth: int = 4
    mlp_ratio: float = 4.0

    def __post_init__(self) -> None:
        if self.width <= 0 or self.width % HEAD_DIM != 0:
            raise ValueError(f"width must be a positive multiple of {HEAD_DIM}, got {self.width}")

    @property
    def num_heads(self) -> int:
        return self.width // HEAD_DIM


@dataclass
class JointDecoderConfig:
    """Joint decoder sizes.

    width: D, channels of a joint token (the motion decoder's width).
    seed_size: side of the square seed map each joint token is projected to.
    channels: channels of the seed map, then of each x2 upsampling stage; the heatmap side is
        seed_size * 2 ** (len(channels) - 1) (4 * 2**4 = 64 by default).
    """

    width: int = 256
    seed_size: int = 4
    channels: tuple[int, ...] = (128, 64, 32, 16, 8)

    @property
    def heatmap_size(self) -> int:
        return self.seed_size * 2 ** (len(self.channels) - 1)


@dataclass
class HeatmapHeadConfig:
    motion: MotionDecoderConfig = field(default_factory=MotionDecoderConfig)
    joint: JointDecoderConfig = field(default_factory=JointDecoderConfig)

    def __post_init__(self) -> None:
        if self.joint.width != self.motion.width:
            raise ValueError(
                f"joint decoder width {self.joint.width} != motion decoder width {self.motion.width}"
            )


def _group_count(channels: int) -> int:
    """GroupNorm groups for a channel count: the largest of 8, 4, 2, 1 that divides it (so it follows
    from the weight shapes)."""
    return next(g for g in (8, 4, 2, 1) if channels % g == 0)


class MotionDecoder(nn.Module):
    """[B,N_m,C_m] motion tokens -> [B,J,D] joint tokens (eq. 3's D_motion, keeping the J mask outputs)."""

    def __init__(self, config: MotionDecoderConfig | None = None) -> None:
        super().__init__()
        self.config = c = config or MotionDecoderConfig()
        self.token_proj = nn.Linear(c.token_dim, c.width)
        self.token_pos_embed = nn.Parameter(torch.randn(c.num_tokens, c.width) * 0.02)
        self.mask_token = nn.Parameter(torch.randn(1, c.width) * 0.02)
        # Unit-variance joint embeddings: the J queries must start distinct. At 0.02, like the mask token, the
        # J outputs start ~96% alike (cosine) and training stalls on a plateau.
        self.joint_pos_embed = nn.Parameter(torch.randn(c.num_joints, c.width))
        self.blocks = nn.ModuleList(TransformerBlock(c.width, c.num_heads, c.mlp_ratio) for _ in range(c.depth))
        self.ln_post = nn.LayerNorm(c.width)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens: [B,N_m,C_m] float (the quantised motion tokens). Returns [B,J,D] in the module's dtype."""
        c = self.config
        if tokens.ndim != 3 or tuple(tokens.shape[1:]) != (c.num_tokens, c.token_dim):
            raise InputError(
                f"Motion tokens must be [frames, {c.num_tokens}, {c.token_dim}] for these heatmap decoder "
                f"weights, got {list(tokens.shape)}: use decoder weights trained with this motion tokenizer."
            )
        b = tokens.shape[0]
        x = self.token_proj(tokens.to(self.token_proj.weight.dtype)) + self.token_pos_embed
        masks = repeat(self.mask_token, "one d -> b (j one) d", b=b, j=c.num_joints) + self.joint_pos_embed
        x = torch.cat([x, masks], dim=1)
        for block in self.blocks:
            x = block(x)
        return self.ln_post(x[:, c.num_tokens :])

    @staticmethod
    def config_from_state_dict(
        state_dict: Mapping[str, torch.Tensor], prefix: str = ""
    ) -> MotionDecoderConfig:
        """Reads the sizes from tensor shapes (CheckpointError when a needed tensor is missing)."""
        try:
            num_tokens, width = state_dict[f"{prefix}token_pos_embed"].shape
            token_dim = state_dict[f"{prefix}token_proj.weight"].shape[1]
            num_joints = state_dict[f"{prefix}joint_pos_embed"].shape[0]
        except KeyError as exc:
            raise CheckpointError(f"Not motion decoder weights: missing tensor {exc.args[0]}.") from None
        if int(width) % HEAD_DIM != 0:
            raise CheckpointError(
                f"Motion decoder width {int(width)} is not a multiple of {HEAD_DIM}: "
                "not weights of this decoder."
            )
        pattern = re.compile(rf"^{re.escape(prefix)}blocks\.(\d+)\.")
        depth = 1 + max((int(m.group(1)) for k in state_dict if (m := pattern.match(k))), default=-1)
        fc1 = state_dict.get(f"{prefix}blocks.0.mlp.0.weight")
        hidden = fc1.shape[0] if fc1 is not None else 4 * width  # a missing fc1 is reported by the load
        return MotionDecoderConfig(
            token_dim=int(token_dim),
            num_tokens=int(num_tokens),
            num_joints=int(num_joints),
            width=int(width),
            depth=depth,
            mlp_ratio=hidden / width,
        )

    @classmethod
    def from_state_dict(cls, state_dict: Mapping[str, torch.Tensor], prefix: str = "") -> MotionDecoder:
        module = cls(cls.config_from_state_dict(state_dict, prefix))
        _load_strict(module, state_dict, prefix, "motion decoder")
        return module


class _UpStage(nn.Module):
    """x2 upsampling: ConvTranspose2d (kernel 4, stride 2, padding 1) -> GroupNorm -> SiLU."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1)
        self.norm = nn.GroupNorm(_group_count(cout), cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.silu(self.norm(self.conv(x)))


class JointDecoder(nn.Module):
    """[B,J,D] joint tokens -> [B,J,H,W] heatmaps (eq. 3's D_joint), H = W = config.heatmap_size."""

    def __init__(self, config: JointDecoderConfig | None = None) -> None:
        super().__init__()
        self.config = c = config or JointDecoderConfig()
        if len(c.channels) < 1:
            raise ValueError("channels needs at least the seed map's channel count")
        self.seed = nn.Linear(c.width, c.channels[0] * c.seed_size**2)
        self.seed_norm = nn.GroupNorm(_group_count(c.channels[0]), c.channels[0])
        self.stages = nn.ModuleList(_UpStage(a, b) for a, b in pairwise(c.channels))
        self.head = nn.Conv2d(c.channels[-1], 1, 1)

    def forward(self, joint_tokens: torch.Tensor) -> torch.Tensor:
        """joint_tokens: [B,J,D]. Returns [B,J,H,W] heatmaps (unbounded regression outputs)."""
        c = self.config
        b = joint_tokens.shape[0]
        x = rearrange(
            self.seed(joint_tokens), "b j (ch h w) -> (b j) ch h w", ch=c.channels[0], h=c.seed_size
        )
        x = F.silu(self.seed_norm(x))
        for stage in self.stages:
            x = stage(x)
        return rearrange(self.head(x), "(b j) 1 h w -> b j h w", b=b)

    @staticmethod
    def config_from_state_dict(
        state_dict: Mapping[str, torch.Tensor], prefix: str = ""
    ) -> JointDecoderConfig:
        try:
            seed_out, width = state_dict[f"{prefix}seed.weight"].shape
            c0 = state_dict[f"{prefix}seed_norm.weight"].shape[0]
        except KeyError as exc:
            raise CheckpointError(f"Not joint decoder weights: missing tensor {exc.args[0]}.") from None
        seed_size = math.isqrt(seed_out // c0)
        if c0 * seed_size**2 != seed_out:
            raise CheckpointError(
                f"Joint decoder seed projection has {seed_out} outputs, not {c0} channels x a square map."
            )
        channels = [int(c0)]
        i = 0
        while f"{prefix}stages.{i}.conv.weight" in state_dict:
            channels.append(int(state_dict[f"{prefix}stages.{i}.conv.weight"].shape[1]))  # [cin,cout,4,4]
            i += 1
        return JointDecoderConfig(width=int(width), seed_size=seed_size, channels=tuple(channels))

    @classmethod
    def from_state_dict(cls, state_dict: Mapping[str, torch.Tensor], prefix: str = "") -> JointDecoder:
        module = cls(cls.config_from_state_dict(state_dict, prefix))
        _load_strict(module, state_dict, prefix, "joint decoder")
        return module


class HeatmapHead(nn.Module):
    """Motion tokens -> joint heatmaps: JointDecoder(MotionDecoder(tokens)) (paper eq. 3).

    State-dict keys: "motion_decoder.*" and "joint_decoder.*".
    """

    def __init__(self, config: HeatmapHeadConfig | None = None) -> None:
        super().__init__()
        self.config = config or HeatmapHeadConfig()
        self.motion_decoder = MotionDecoder(self.config.motion)
        self.joint_decoder = JointDecoder(self.config.joint)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens: [B,N_m,C_m] motion tokens. Returns [B,J,Hh,Wh] heatmaps in the module's dtype."""
        return self.joint_decoder(self.motion_decoder(tokens))

    @classmethod
    def from_state_dict(cls, state_dict: Mapping[str, torch.Tensor]) -> HeatmapHead:
        """Builds the head with sizes read from the tensor shapes and loads it strictly (CheckpointError
        listing missing, unexpected and mis-shaped tensors)."""
        config = HeatmapHeadConfig(
            motion=MotionDecoder.config_from_state_dict(state_dict, "motion_decoder."),
            joint=JointDecoder.config_from_state_dict(state_dict, "joint_decoder."),
        )
        module = cls(config)
        _load_strict(module, state_dict, "", "heatmap head")
        return module

    def save(self, path: str | os.PathLike) -> None:
        """Writes the weights as safetensors (contiguous CPU tensors); from_file reads them back."""
        from safetensors.torch import save_file

        save_file({k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}, os.fspath(path))

    @classmethod
    def from_file(cls, path: str | os.PathLike, device: torch.device | str | None = None) -> HeatmapHead:
        """Loads a safetensors file of HeatmapHead.state_dict() (sizes inferred), in eval mode on device."""
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise CheckpointError(f"Heatmap decoder weights '{path}' not found: check the path.")
        state_dict = load_safetensors(path, "heatmap head")
        check_finite(state_dict, f"heatmap head file '{os.path.basename(path)}'")
        if not any(k.startswith("motion_decoder.") for k in state_dict):
            raise CheckpointError(
                f"'{path}' holds no heatmap decoder weights (no 'motion_decoder.*' tensors): choose the "
                "Stage-1 heatmap head file."
            )
        try:
            module = cls.from_state_dict(state_dict)
        except CheckpointError as exc:
            raise CheckpointError(f"'{path}': {exc}") from None
        return module.to(device).eval() if device is not None else module.eval()


def _load_strict(module: nn.Module, state_dict: Mapping[str, torch.Tensor], prefix: str, what: str) -> None:
    """Loads module's tensors from state_dict[prefix + name]; raises CheckpointError listing differences."""
    own = module.state_dict()
    given = {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}
    missing, unexpected, wrong = shape_mismatch({k: v.shape for k, v in own.items()},
                                                {k: v.shape for k, v in given.items()})
    missing = sorted(missing)
    mis_shaped = [f"{k}: file {list(given[k].shape)} vs model {list(own[k].shape)}" for k in sorted(wrong)]
    if missing or unexpected or mis_shaped:
        parts = []
        for label, items in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", mis_shaped)):
            if items:
                shown = ", ".join(prefix + i for i in items[:8]) + (" ..." if len(items) > 8 else "")
                parts.append(f"{len(items)} {label}: {shown}")
        raise CheckpointError(f"The {what} weights do not match: " + "; ".join(parts) + ".")
    module.load_state_dict({k: v.to(own[k].dtype) for k, v in given.items()}, strict=True)


def heatmap_mse(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Heatmap MSE (paper eq. 5 / 6) as a scalar float32.

    pred, target: [B,J,H,W] (B = frames); weight: optional [B,J] per-joint weight (e.g. visibility, so
    joints without a label are not pushed to zero). Without weight: the mean of (pred - target)^2 over all
    elements. Eq. 5 averages the squared differences over frames and leaves the reduction over joints and
    pixels unstated; a sum there would be this times J*H*W, a constant factor. With weight:
    sum_bj w_bj * mean_hw (pred - target)^2 / sum_bj w_bj (0 when all weights are 0).
    """
    if pred.shape != target.shape or pred.ndim != 4:
        raise ValueError(f"expected pred and target [B,J,H,W] of one shape, got {pred.shape}, {target.shape}")
    err = (pred.float() - target.float()) ** 2
    if weight is None:
        return err.mean()
    if weight.shape != pred.shape[:2]:
        raise ValueError(f"expected weight [B,J] = {tuple(pred.shape[:2])}, got {tuple(weight.shape)}")
    w = weight.to(err.dtype)
    per_joint = err.mean(dim=(-2, -1))
    return (per_joint * w).sum() / w.sum().clamp_min(1e-8)
