"""Motion encoders as the trainers use them: driving frames -> motion tokens with gradient.

TokenizerEncoder: the released motion tokenizer with a differentiable VQ. ``MotionTokenizer.encode`` runs
    under inference_mode; training builds the path from ``encode_latents`` and the quantiser's codebook:
    z and the codebook rows are l2-normalised as the released quantiser does, the nearest row is chosen
    with the same distance expansion (so the indices are those of inference), the tokens are the chosen
    rows with a straight-through gradient to z, and the VQ loss is
    ||sg(z) - e||^2 (codebook) + commitment_cost * ||z - sg(e)||^2 (commitment, 0.25 released).
ConvMotionEncoder: the ablation of Table 2 exp. A / Table 5: a plain strided-conv encoder producing the
    same [N,32,12]-shaped tokens (l2-normalised like codebook rows) without any quantisation.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from einops import rearrange
from safetensors.torch import save_file
from torch import nn

from ..checkpoints import read_checked
from ..errors import CheckpointError
from ..tokenizer import MotionTokenizer, preprocess_frames

CONV_FORMAT = "im-animation-conv-motion-encoder"


class TokenizerEncoder(nn.Module):
    """frames [N,H,W,3] in [0,1] -> (tokens [N,L,C] float32, {"vq": loss}); straight-through tokens."""

    def __init__(self, tokenizer: MotionTokenizer, commitment_cost: float = 0.25, quantize_warmup_steps: int = 0):
        super().__init__()
        self.tokenizer = tokenizer
        self.commitment_cost = commitment_cost
        self.quantize_warmup_steps = int(quantize_warmup_steps)
        # Training calls so far (saved with the trainer's checkpoint, not in the exported tokenizer).
        self.register_buffer("calls", torch.zeros((), dtype=torch.long))
        self._recent: list[torch.Tensor] = []

    @property
    def num_tokens(self) -> int:
        return self.tokenizer.config.num_latent_tokens

    @property
    def token_dim(self) -> int:
        return self.tokenizer.config.token_size

    def forward(self, frames: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
        """Returns (tokens [N,L,C] float32, losses {"vq"}, indices [N,L]; None during the quantiser warm-up,
        when the tokens are the continuous latents)."""
        pixels = preprocess_frames(frames, size=self.tokenizer.config.image_size)
        z = self.tokenizer.encode_latents(pixels).float()
        if self.training and torch.is_grad_enabled() and int(self.calls) < self.quantize_warmup_steps:
            return self._warmup(z)
        tokens, vq, indices = quantize_straight_through(
            z, self.tokenizer.quantize.embedding.weight, self.tokenizer.config.use_l2_norm, self.commitment_cost)
        return tokens, {"vq": vq}, indices

    def _warmup(self, z: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor], None]:
        """Continuous tokens while the encoder learns to say something; then seed the codebook from them."""
        self.calls += 1
        flat = rearrange(z.detach(), "n l c -> (n l) c")
        self._recent = (self._recent + [flat])[-16:]
        if int(self.calls) == self.quantize_warmup_steps:
            self.seed_codebook(torch.cat(self._recent))
            self._recent = []
        tokens = F.normalize(z, dim=-1) if self.tokenizer.config.use_l2_norm else z
        return tokens, {"vq": z.new_zeros(())}, None

    @torch.no_grad()
    def seed_codebook(self, latents: torch.Tensor, generator: torch.Generator | None = None) -> None:
        """Codebook rows := random picks of latents [M,C] (with replacement when M < K), slightly jittered so
        that repeated picks differ."""
        weight = self.tokenizer.quantize.embedding.weight
        k = weight.shape[0]
        pick = torch.randint(latents.shape[0], (k,), generator=generator, device=latents.device)
        rows = latents[pick].float()
        if self.tokenizer.config.use_l2_norm:
            rows = F.normalize(rows, dim=-1)
        rows = rows + 0.01 * rows.std() * torch.randn(rows.shape, generator=generator, device=rows.device)
        weight.copy_(rows.to(weight.dtype))
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.broadcast(weight.data, src=0)  # every rank must hold rank 0's codebook


def quantize_straight_through(z: torch.Tensor, codebook: torch.Tensor, use_l2_norm: bool,
                              commitment_cost: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """z [N,L,C], codebook [K,C] -> (tokens [N,L,C] = chosen rows with straight-through gradient to z,
    VQ loss (codebook + commitment_cost * commitment), indices [N,L]); float32, also under autocast (the
    codebook search must pick the rows inference picks)."""
    with torch.autocast(z.device.type, enabled=False):
        return _quantize(z, codebook, use_l2_norm, commitment_cost)


def _quantize(z: torch.Tensor, codebook: torch.Tensor, use_l2_norm: bool,
              commitment_cost: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    n = z.shape[0]
    z = z.float()
    cb = codebook.float()
    if use_l2_norm:
        z = F.normalize(z, dim=-1)
        cb = F.normalize(cb, dim=-1)
    flat = rearrange(z, "n l c -> (n l) c")
    with torch.no_grad():  # the released expansion |e|^2 - 2 z.e + |z|^2, as VectorQuantizer computes it
        dist = torch.addmm(cb.square().sum(dim=1)[None, :], flat, cb.t(), beta=1.0, alpha=-2.0)
        dist = dist + flat.square().sum(dim=1, keepdim=True)
        indices = dist.argmin(dim=1)
    chosen = rearrange(cb[indices], "(n l) c -> n l c", n=n)
    codebook_loss = F.mse_loss(chosen, z.detach())
    commitment = F.mse_loss(z, chosen.detach())
    tokens = z + (chosen - z).detach()
    return tokens, codebook_loss + commitment_cost * commitment, rearrange(indices, "(n l) -> n l", n=n)


@dataclass
class ConvEncoderConfig:
    image_size: int = 256
    channels: tuple[int, ...] = (32, 64, 128, 256)
    num_tokens: int = 32
    token_dim: int = 12

    def __post_init__(self) -> None:
        self.channels = tuple(int(c) for c in self.channels)
        if not self.channels or any(c % 8 for c in self.channels):
            raise ValueError(f"conv encoder channels must be multiples of 8 (GroupNorm), got {self.channels}")


class ConvMotionEncoder(nn.Module):
    """Strided convs (x2 per stage, GroupNorm + SiLU) -> 4x4 average pool -> linear -> [N,32,12] tokens,
    l2-normalised per token. Same preprocessing (pad to square, resize) as the tokenizer."""

    def __init__(self, config: ConvEncoderConfig):
        super().__init__()
        self.config = c = config
        layers: list[nn.Module] = []
        cin = 3
        for ch in c.channels:
            layers += [nn.Conv2d(cin, ch, 3, stride=2, padding=1), nn.GroupNorm(8, ch), nn.SiLU()]
            cin = ch
        self.net = nn.Sequential(*layers)
        self.proj = nn.Linear(cin * 16, c.num_tokens * c.token_dim)

    num_tokens = property(lambda self: self.config.num_tokens)
    token_dim = property(lambda self: self.config.token_dim)

    def forward(self, frames: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor], None]:
        """frames [N,H,W,3] in [0,1] -> (tokens [N,32,12] float32, {} (no VQ loss), None)."""
        pixels = preprocess_frames(frames, size=self.config.image_size).to(self.proj.weight)
        feat = F.adaptive_avg_pool2d(self.net(pixels * 2 - 1), 4).flatten(1)
        tokens = self.proj(feat).unflatten(1, (self.config.num_tokens, self.config.token_dim))
        return F.normalize(tokens.float(), dim=-1), {}, None

    def save(self, path: str | Path) -> None:
        sd = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in self.state_dict().items()}
        meta = {"format": CONV_FORMAT, "config": json.dumps(asdict(self.config))}
        save_file(sd, str(path), metadata=meta)

    @classmethod
    def from_file(cls, path: str | Path) -> ConvMotionEncoder:
        def check(meta: dict[str, str], _shapes, _dtypes) -> None:
            if meta.get("format") != CONV_FORMAT:
                raise CheckpointError(f"'{path}' is not a conv motion encoder file (the ablation's encoder, "
                                      f"written by the stage-1 trainer with motion_encoder 'conv')")

        meta, sd = read_checked(path, "conv motion encoder", check)
        model = cls(ConvEncoderConfig(**json.loads(meta["config"])))
        try:
            model.load_state_dict(sd, strict=True)
        except RuntimeError as e:
            raise CheckpointError(f"'{path}' does not match its own config: {e}") from e
        return model
