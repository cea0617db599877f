"""What a DiT's output is measured against, shared by training (L_DiT) and evaluation (the DiT probe).

Flow matching in ComfyUI's convention (``train.targets`` draws the noise and sigmas): the sampler's denoised
estimate of a model output, and where a clip moves away from its identity image, whose latent pixels the
trainer may weigh more (Stage-3 ``moving_weight``) and the probe scores apart.
"""

from __future__ import annotations

import torch

from .frames import latent_frame_groups


def moving_weights(target: torch.Tensor, identity: torch.Tensor, latent_hw: tuple[int, int],
                   strength: float) -> torch.Tensor:
    """Per-latent-pixel L_DiT weights that stress what the motion decides: [B,1,F,h,w] = 1 + strength * m, m
    from ``moving_map`` (same arguments)."""
    return 1.0 + strength * moving_map(target, identity, latent_hw)[:, None]


def moving_map(target: torch.Tensor, identity: torch.Tensor, latent_hw: tuple[int, int]) -> torch.Tensor:
    """How much each latent pixel's frames move away from the identity image.

    target: [B,T,H,W,3] the clip to generate, identity: [B,H,W,3] its identity image, both float in [0,1];
    latent_hw: the latent grid (h, w) -> m [B,F,h,w] over the F latent frames of T. m is how
    much the pixels under each latent pixel change from the identity image (mean absolute RGB change, the
    largest over the latent frame's pixel frames, averaged over the block), divided by the sample's largest,
    so m is in [0,1]: about 0 on the still background, 1 where a limb arrived or left. Measured in pixels,
    because Wan's VAE encodes the first frame alone and later ones in groups of 4, so a still pixel's latent
    still differs between the identity frame and the clip's frames.

    Why: in a plain L_DiT the few pixels a limb covers (about 10% here) weigh little beside the scene the identity
    already gives, and the small demo DiT learnt the identity's layout from the retargeted map long before the
    driver's motion (docs/training.md). Training-only: nothing at inference depends on it."""
    change = (target.float() - identity.float()[:, None]).abs().mean(-1)  # [B,T,H,W]
    per_latent = torch.stack([change[:, s:e].amax(1) for s, e in latent_frame_groups(target.shape[1])], dim=1)
    m = torch.nn.functional.adaptive_avg_pool2d(per_latent, latent_hw)  # [B,F,h,w]
    return m / m.flatten(1).amax(1).clamp(min=1e-6).view(-1, 1, 1, 1)


def denoised_from_output(x_t: torch.Tensor, output: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """What ComfyUI's sampler makes of a model output (CONST.calculate_denoised): x_t - sigma * output."""
    s = sigma.to(x_t).view(-1, *([1] * (x_t.ndim - 1)))
    return x_t - s * output
