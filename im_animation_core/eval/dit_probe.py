"""Does a Stage-3 DiT draw the driver's motion? Teacher-forced probes on held-out pairs with ground truth.

The pairs' ground-truth latents are noised to fixed sigmas (one fixed noise draw) and the DiT runs twice on
each: with the pair's own retargeted motion, and with the motion retargeted from another pair's driving clip
onto the same identity (so only the motion differs). A DiT that ignores the motion scores the same with both.

- flow loss: L_DiT on all latent pixels, and on the moving ones (where the ground truth departs from the
  identity image: ``dit_targets.moving_weights`` above 1 + MOVING_THRESHOLD);
- x0 motion correlation: the DiT's clean estimate x_t - sigma * v, decoded, against the ground truth
  (``metrics.motion_correlation``). At low sigma the noisy latent itself still shows the motion, so only the
  gap between own and other motion is the DiT's doing.

This is how the demo set was found to use the retargeted map for the identity's layout but hardly for the
motion (docs/training.md); ``lab/dit_probe.py`` runs it on a Stage-3 run or checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..dit_targets import denoised_from_output, moving_weights
from ..injection import REFERENCE_FRAMES, motion_with_reference
from .metrics import motion_correlation

MOVING_THRESHOLD = 0.3


@torch.no_grad()
def probe_dit_motion(model, batch: dict, decode: Callable[[torch.Tensor], torch.Tensor] | None,
                     sigmas: tuple[float, ...] = (0.3, 0.6, 0.9), seed: int = 0) -> list[dict[str, float]]:
    """model: a ``Stage3Model`` in eval mode; batch: a prepared batch of at least 2 pairs (``Stage3.prepare``:
    identity_latent and target_latent set); decode: raw latent [1,C,F,h,w] -> clip [T,H,W,3] float in [0,1]
    (the workflow's VAE), or None to skip the x0 correlations.

    Returns one dict per sigma: sigma, loss_own / loss_other (all pixels), moving_own / moving_other (moving
    pixels), and with decode corr_own / corr_other (mean over pairs)."""
    n = batch["target_latent"].shape[0]
    if n < 2:
        raise ValueError("probe_dit_motion needs at least 2 pairs: each pair borrows the next one's driver")
    own, _, _ = model.retarget(batch)
    other, _, _ = model.retarget({**batch, "driving": batch["driving"].roll(1, 0)})
    motions = {"own": motion_with_reference(own).float(), "other": motion_with_reference(other).float()}
    x0 = model.clean_latents(batch)
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed)).to(x0)
    moving = moving_weights(batch["target"], batch["identity"], tuple(x0.shape[-2:]), 1.0) > 1 + MOVING_THRESHOLD
    moving = moving.expand(-1, x0.shape[1], -1, -1, -1)
    context = torch.zeros(n, 1, model.dit.config.text_dim, device=x0.device)
    rows = []
    for sigma in sigmas:
        s = torch.full((n,), float(sigma), device=x0.device)
        x_t, timestep = model.noised_input(x0, noise, s)
        row = {"sigma": float(sigma)}
        for name, motion in motions.items():
            v = model.dit(x_t.to(model.dit.dtype), timestep, context, motion=motion).float()
            err = (v - (noise - x0))[:, :, REFERENCE_FRAMES:].pow(2)
            row[f"loss_{name}"] = float(err.mean())
            row[f"moving_{name}"] = float(err[moving].mean()) if moving.any() else float("nan")
            if decode is not None:
                latents = model.latent_format.process_out(denoised_from_output(x_t, v, s)[:, :, REFERENCE_FRAMES:])
                row[f"corr_{name}"] = sum(motion_correlation(decode(latents[i:i + 1]), batch["target"][i].float())
                                          for i in range(n)) / n
        rows.append(row)
    return rows
