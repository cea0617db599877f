"""Widening a trained Wan VAE keeps its encode and decode (train.vae_widen), and the VAE stage uses it."""

import pytest
import torch

from im_animation_core.train.vae_stage import VAEStageConfig, run_vae
from im_animation_core.train.vae_widen import widen_wan_vae
from im_animation_core.wan.vae import WanVAE, load_wan_vae


def trained_like(dim: int, seed: int = 0) -> WanVAE:
    """A VAE whose weights are not the fresh init's special values (gains 1, zero biases)."""
    torch.manual_seed(seed)
    model = WanVAE(dim=dim)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.add_(0.1 * torch.randn_like(p)) if name.endswith(("gamma", "bias")) else p.mul_(0.7)
    return model.eval()


@pytest.mark.parametrize("factor", [2, 3])
def test_widening_keeps_encode_and_decode(one_thread, factor):
    small = trained_like(4)
    wide = widen_wan_vae(small, factor, noise=0)
    assert wide.config.dim == 4 * factor and wide.config.z_dim == small.config.z_dim
    assert sum(p.numel() for p in wide.parameters()) > 3 * sum(p.numel() for p in small.parameters())
    video = torch.rand(1, 3, 9, 32, 32) * 2 - 1
    with torch.no_grad():
        z_small, z_wide = small.encode(video), wide.encode(video)
        torch.testing.assert_close(z_wide, z_small, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(wide.decode(z_small), small.decode(z_small), rtol=1e-4, atol=1e-4)


def test_noise_breaks_the_copies_apart_but_stays_small(one_thread):
    small = trained_like(4)
    wide = widen_wan_vae(small, 2, noise=1e-3, seed=1)
    w = wide.decoder.head[2].weight  # reads the tiled hidden channels: the two copies must differ
    assert not torch.equal(w[:, :4], w[:, 4:])
    video = torch.rand(1, 3, 5, 32, 32) * 2 - 1
    with torch.no_grad():
        diff = (wide.decode(wide.encode(video)) - small.decode(small.encode(video))).abs().max()
    assert 0 < float(diff) < 0.05


def test_vae_stage_widens_its_init(tmp_path, one_thread):
    base = {"steps": 1, "batch_size": 1, "eval_every": 1,
            "data": {"frames": 5, "size": 16, "num_samples": 4}, "eval": {"count": 1, "seed": 3}}
    first = run_vae(VAEStageConfig.from_dict({**base, "output": str(tmp_path / "a.safetensors"),
                                              "train": {"vae": {"dim": 4}}}), log=None)
    logs = []
    cfg = {**base, "output": str(tmp_path / "b.safetensors"), "init": first["output"],
           "train": {"vae": {"dim": 8}, "lr": 1e-9}}
    run_vae(VAEStageConfig.from_dict(cfg), log=logs.append)
    assert load_wan_vae(tmp_path / "b.safetensors").config.dim == 8
    assert any("widening the init VAE from dim 4 to 8" in str(m) for m in logs)
