"""Train a Wan2.1-architecture VAE (``wan.vae.WanVAE``) on clips and save a file ComfyUI's stock Load VAE reads.

Loss = l1 * |x - y| + mse * (x - y)^2 + edge * |grad x - grad y| (spatial finite differences, a cheap
perceptual-free sharpness term) + kl * KL(q(z|x) || prior), all means over elements. The prior is by
default N(mean_c, std_c^2) with ComfyUI's Wan2.1 per-channel latent statistics, so that
``Wan21LatentFormat.process_in`` maps the trained VAE's latents to roughly zero-mean unit-variance
values, what a Wan2.1-family DiT expects in ComfyUI's sampler; ``prior="standard"`` uses N(0, 1).

Data: any iterator of clips [B,T,H,W,3] in [0,1] (ComfyUI's IMAGE layout with a batch axis), T = 4k+1,
H and W multiples of 8. Never imports ComfyUI.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from ..eval.metrics import psnr
from ..frames import clip_to_video, video_to_clip
from ..wan.latent_format import Wan21LatentFormat
from ..wan.vae import WanVAE, WanVAEConfig, save_wan_vae
from .schedule import lr_factor


@dataclass(kw_only=True)
class VAETrainConfig:
    vae: WanVAEConfig = field(default_factory=lambda: WanVAEConfig(dim=16))
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.99)
    weight_decay: float = 1e-4
    warmup_steps: int = 20
    lr_schedule: str = "constant"  # or "cosine" (to 10% of lr at the last step)
    grad_clip: float = 1.0
    l1_weight: float = 1.0
    mse_weight: float = 1.0
    edge_weight: float = 0.0
    kl_weight: float = 1e-4
    prior: str = "wan21"  # "wan21": N(Wan2.1 latents_mean, latents_std^2) per channel; "standard": N(0, 1)
    sample_latent: bool = True  # decode mu + sigma * noise during training (False: mu)
    # Train the decoder only (encoder, conv1 frozen): the latent space stays fixed, so a DiT can train on
    # latents computed once while the decoder keeps improving.
    freeze_encoder: bool = False
    gradient_checkpointing: bool = False
    seed: int = 0
    device: str = "cpu"
    log_every: int = 25
    save_every: int = 0  # 0: save at the end only
    save_dtype: str | None = None  # e.g. "float16"; None keeps float32

    def __post_init__(self):
        if isinstance(self.vae, dict):
            self.vae = WanVAEConfig.from_dict(self.vae)
        if self.prior not in ("wan21", "standard"):
            raise ValueError(f"prior must be 'wan21' or 'standard', got {self.prior!r}")
        if self.lr_schedule not in ("constant", "cosine"):
            raise ValueError(f"lr_schedule must be 'constant' or 'cosine', got {self.lr_schedule!r}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["vae"] = self.vae.to_dict()
        return d


def edge_loss(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """L1 between the horizontal and vertical finite differences of two [B,C,T,H,W] clips."""
    dx = (x[..., :, 1:] - x[..., :, :-1]) - (y[..., :, 1:] - y[..., :, :-1])
    dy = (x[..., 1:, :] - x[..., :-1, :]) - (y[..., 1:, :] - y[..., :-1, :])
    return 0.5 * (dx.abs().mean() + dy.abs().mean())


def kl_loss(mu: torch.Tensor, logvar: torch.Tensor, prior: str = "wan21") -> torch.Tensor:
    """Mean over latent elements of KL(N(mu, exp(logvar)) || prior)."""
    logvar = logvar.clamp(-30.0, 20.0)
    if prior == "standard" or mu.shape[1] != Wan21LatentFormat.latent_channels:
        return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).mean()
    fmt = Wan21LatentFormat()
    m = fmt.latents_mean.to(mu.device, mu.dtype)
    s2 = fmt.latents_std.to(mu.device, mu.dtype).pow(2)
    return 0.5 * ((mu - m).pow(2) / s2 + logvar.exp() / s2 - 1.0 - logvar + s2.log()).mean()


def vae_losses(model: WanVAE, video: torch.Tensor, cfg: VAETrainConfig,
               generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict[str, float], torch.Tensor]:
    """(total loss, its terms, reconstruction) of one batch [B,C,T,H,W] in [-1,1]."""
    recon, mu, logvar = model(video, sample=cfg.sample_latent, generator=generator)
    recon = recon.float()
    terms = {"l1": F.l1_loss(recon, video), "mse": F.mse_loss(recon, video), "kl": kl_loss(mu.float(), logvar.float(),
                                                                                         cfg.prior)}
    if cfg.edge_weight:
        terms["edge"] = edge_loss(recon, video)
    weights = {"l1": cfg.l1_weight, "mse": cfg.mse_weight, "kl": cfg.kl_weight, "edge": cfg.edge_weight}
    total = sum(weights[k] * v for k, v in terms.items())
    return total, {k: v.item() for k, v in terms.items()}, recon


@torch.no_grad()
def evaluate_vae(model: WanVAE, clips: Iterable[torch.Tensor]) -> dict[str, float]:
    """PSNR (dB, on [0,1] after clamping, encode mu -> decode as ComfyUI does) and latent statistics
    (per-element mean/std of the raw mu and of Wan21LatentFormat.process_in(mu)) over clips [B,T,H,W,3]."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    outs, targets, mus = [], [], []
    for clip in clips:
        video = clip_to_video(clip.to(device))
        mu = model.encode(video)
        outs.append(video_to_clip(model.decode(mu)).flatten())
        targets.append(clip.to(device).float().flatten())
        mus.append(mu.float())
    model.train(was_training)
    mu = torch.cat([m.transpose(0, 1).flatten(1) for m in mus], dim=1)  # [C, N]
    # one PSNR over all held-out pixels (clips of different sizes weigh by their pixels)
    result = {"psnr": psnr(torch.cat(outs), torch.cat(targets)),
              "latent_mean": mu.mean().item(), "latent_std": mu.std().item()}
    if mu.shape[0] == Wan21LatentFormat.latent_channels:
        fmt = Wan21LatentFormat()
        normed = (mu - fmt.latents_mean.view(-1, 1)) / fmt.latents_std.view(-1, 1)
        result.update(normed_mean=normed.mean().item(), normed_std=normed.std().item())
    return result


def train_vae(config: VAETrainConfig, dataset_iter: Iterator[torch.Tensor] | Iterable[torch.Tensor], steps: int,
              out_path: str | Path | None, log: Callable[[str], None] | None = print, model: WanVAE | None = None,
              eval_clips: Iterable[torch.Tensor] | None = None, eval_every: int = 0,
              callback: Callable[[int, WanVAE, dict | None], None] | None = None) -> tuple[WanVAE, list[dict]]:
    """Train ``model`` (a new WanVAE of ``config.vae`` when None) for ``steps`` AdamW steps on batches drawn
    from ``dataset_iter`` ([B,T,H,W,3] in [0,1], T = 4k+1), and save it to ``out_path`` (.safetensors that
    ComfyUI's stock Load VAE reads; skipped when None). Returns (model, history): one dict per logged
    step with the loss terms, training PSNR, learning rate and elapsed seconds (plus eval PSNR and latent
    statistics every ``eval_every`` steps when ``eval_clips`` is given). ``callback(step, model, record)``
    runs after every step (record: the logged dict of that step, else None), e.g. for previews."""
    torch.manual_seed(config.seed)
    device = torch.device(config.device)
    if model is None:
        model = WanVAE(config.vae)
    model.to(device).train()
    model.set_gradient_checkpointing(config.gradient_checkpointing)
    frozen = (model.encoder, model.conv1) if config.freeze_encoder else ()
    for module in frozen:
        module.requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim > 1]
    no_decay = [p for p in params if p.ndim <= 1]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=config.lr, betas=config.betas)
    gen = torch.Generator(device=device).manual_seed(config.seed)
    eval_clips = list(eval_clips) if eval_clips is not None else None
    data = iter(dataset_iter)
    history: list[dict] = []
    t0 = time.perf_counter()
    save_dtype = getattr(torch, config.save_dtype) if config.save_dtype else None

    def save(step: int) -> None:
        if out_path is not None:
            save_wan_vae(model, out_path, dtype=save_dtype,
                         metadata={"im_animation_vae_train": json.dumps({"steps": step, **config.to_dict()})})

    done = 0
    end = object()
    clip = next(data, end) if steps > 0 else end
    for step in range(steps):
        if clip is end:
            if log:
                log(f"data ran out after {step} steps")
            break
        video = clip_to_video(clip.to(device, torch.float32))
        for g in opt.param_groups:
            g["lr"] = config.lr * lr_factor(step, config.warmup_steps, 0, steps, config.lr_schedule)
        loss, terms, recon = vae_losses(model, video, config, gen)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"VAE training diverged at step {step}: loss {loss.item()} ({terms}); "
                                     "lower lr or raise grad_clip strictness")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip:
            torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
        opt.step()
        done = step + 1
        clip = next(data, end) if step < steps - 1 else end  # fetched now to know whether this step is the last
        last = clip is end
        evaluate = bool(eval_clips) and eval_every > 0 and (done % eval_every == 0 or last)
        if evaluate or last or step == 0 or (config.log_every and done % config.log_every == 0):
            with torch.no_grad():
                train_psnr = psnr(video_to_clip(recon.detach()), video_to_clip(video))
            rec = {"step": done, "loss": loss.item(), **terms, "psnr": train_psnr,
                   "lr": opt.param_groups[0]["lr"], "seconds": time.perf_counter() - t0}
            if evaluate:
                rec.update({f"eval_{k}": v for k, v in evaluate_vae(model, eval_clips).items()})
            history.append(rec)
            if log:
                log(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in rec.items()))
        else:
            rec = None
        if callback is not None:
            callback(done, model, rec)
        if config.save_every and done % config.save_every == 0 and not last:
            save(done)
    save(done)
    model.eval()
    return model, history
