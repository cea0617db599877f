"""Wan latent formats (bit-identical to ComfyUI's Wan21 / Wan22 process_in / process_out) and the VAE
trainer: losses, a few steps that lower the reconstruction loss, and a saved file that ComfyUI reads."""

import itertools

import pytest
import torch

from im_animation_core.errors import InputError
from im_animation_core.eval.metrics import psnr
from im_animation_core.frames import clip_to_video, video_to_clip
from im_animation_core.train.vae_train import VAETrainConfig, edge_loss, evaluate_vae, kl_loss, train_vae
from im_animation_core.wan.latent_format import Wan21LatentFormat, Wan22LatentFormat, latent_format_for
from im_animation_core.wan.vae import WanVAEConfig, load_wan_vae, vae_file_metadata
from tools.comfy_path import import_comfyui


@pytest.fixture(scope="module")
def comfy():
    import_comfyui()
    import comfy.latent_formats
    import comfy.model_management  # noqa: F401  (after args.cpu is set)
    import comfy.sd
    import comfy.utils

    return comfy


@pytest.mark.parametrize("ours, name", [(Wan21LatentFormat, "Wan21"), (Wan22LatentFormat, "Wan22")])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_latent_format_is_comfyuis(comfy, ours, name, dtype):
    theirs = getattr(comfy.latent_formats, name)()
    mine = ours()
    assert mine.latent_channels == theirs.latent_channels and mine.scale_factor == theirs.scale_factor
    assert torch.equal(mine.latents_mean, theirs.latents_mean) and torch.equal(mine.latents_std, theirs.latents_std)
    z = (torch.randn(2, mine.latent_channels, 3, 4, 5, generator=torch.Generator().manual_seed(0)) * 2).to(dtype)
    assert torch.equal(mine.process_in(z), theirs.process_in(z))
    assert torch.equal(mine.process_out(z), theirs.process_out(z))
    if dtype == torch.float32:
        assert torch.allclose(mine.process_out(mine.process_in(z)), z, atol=1e-5)


def test_latent_format_errors_and_lookup():
    with pytest.raises(InputError, match=r"\[B,16,F,h,w\]"):
        Wan21LatentFormat().process_in(torch.zeros(1, 48, 1, 2, 2))
    with pytest.raises(InputError, match="5-D|\\[B,48"):
        Wan22LatentFormat().process_out(torch.zeros(48, 1, 2, 2))
    assert isinstance(latent_format_for(16), Wan21LatentFormat)
    assert isinstance(latent_format_for(48), Wan22LatentFormat)
    with pytest.raises(InputError, match="no Wan latent format"):
        latent_format_for(4)


def test_losses():
    fmt = Wan21LatentFormat()
    mu = fmt.latents_mean.expand(1, 16, 2, 3, 3).clone()
    logvar = (fmt.latents_std**2).log().expand_as(mu).clone()
    assert kl_loss(mu, logvar, "wan21").abs().item() < 1e-6  # the prior itself
    assert kl_loss(mu, logvar, "standard").item() > 0.1
    assert kl_loss(torch.zeros(1, 16, 1, 2, 2), torch.zeros(1, 16, 1, 2, 2), "standard").item() == 0.0
    # the KL against the Wan2.1 prior is the standard KL of the process_in-normalised latent distribution
    z, lv = torch.randn(1, 16, 2, 2, 2), torch.randn(1, 16, 2, 2, 2) * 0.3
    normed_lv = lv - (fmt.latents_std**2).log()
    assert torch.allclose(kl_loss(z, lv, "wan21"), kl_loss(fmt.process_in(z), normed_lv, "standard"), atol=1e-6)
    x = torch.rand(1, 3, 5, 8, 8)
    assert edge_loss(x, x).item() == 0.0 and edge_loss(x, x + 0.3).item() < 1e-6
    assert edge_loss(x, x.flip(-1)).item() > 0
    assert psnr(x, x) > 90 and abs(psnr(x, (x + 0.1)) - 20.0) < 1e-3


def test_clip_conversions():
    clip = torch.rand(2, 5, 16, 8, 3)
    video = clip_to_video(clip)
    assert video.shape == (2, 3, 5, 16, 8) and video.min() >= -1 and video.max() <= 1
    assert torch.allclose(video_to_clip(video), clip, atol=1e-6)
    assert clip_to_video(clip[0]).shape == (1, 3, 5, 16, 8)
    with pytest.raises(InputError, match="multiples of 8"):
        clip_to_video(torch.rand(1, 5, 12, 8, 3))




def tiny_clips():
    """A moving bright square on a coloured background, 5 frames of 16x16: [1,5,16,16,3] in [0,1]."""
    clip = torch.empty(1, 5, 16, 16, 3)
    clip[:] = torch.tensor([0.2, 0.4, 0.7])
    for t in range(5):
        clip[0, t, 4:10, 2 + t:8 + t] = torch.tensor([0.9, 0.8, 0.1])
    return clip


def test_train_vae_lowers_loss_and_saves_a_stock_file(comfy, tmp_path, one_thread):
    clip = tiny_clips()
    cfg = VAETrainConfig(vae=WanVAEConfig(dim=4), lr=3e-3, warmup_steps=0, kl_weight=1e-4, edge_weight=0.5,
                         log_every=1, seed=0)
    logs = []
    out = tmp_path / "vae.safetensors"
    model, hist = train_vae(cfg, itertools.repeat(clip), 40, out, log=logs.append, eval_clips=[clip], eval_every=20)
    assert len(hist) == 40 and len(logs) == 40 and hist[-1]["step"] == 40
    first = sum(h["l1"] + h["mse"] for h in hist[:3]) / 3
    last = sum(h["l1"] + h["mse"] for h in hist[-3:]) / 3
    assert last < 0.6 * first, (first, last)
    assert hist[-1]["eval_psnr"] > hist[0]["psnr"] + 3
    assert {"eval_latent_std", "eval_normed_mean", "eval_normed_std"} <= set(hist[-1])
    assert not model.training
    # the file: metadata, read back here and by ComfyUI's stock VAE class (Wan2.1 VAE of width 4)
    meta = vae_file_metadata(out)
    assert meta["dim"] == 4
    back = load_wan_vae(out)
    assert all(torch.equal(back.state_dict()[k], v) for k, v in model.state_dict().items())
    vae = comfy.sd.VAE(sd=comfy.utils.load_torch_file(str(out)), device=torch.device("cpu"), dtype=torch.float32)
    assert vae.latent_channels == 16 and vae.first_stage_model.decoder.head[0].gamma.shape[0] == 4
    with torch.no_grad():
        ours = video_to_clip(model.decode(model.encode(clip_to_video(clip))))
    theirs = vae.decode(vae.encode(clip[0]))
    assert (ours - theirs).abs().max().item() < 1e-4
    assert evaluate_vae(model, [clip])["psnr"] == pytest.approx(psnr(ours, clip), abs=1e-3)


def test_train_vae_stops_when_data_runs_out(tmp_path, one_thread):
    cfg = VAETrainConfig(vae=WanVAEConfig(dim=4), log_every=0)
    logs = []
    model, hist = train_vae(cfg, [tiny_clips()] * 2, 5, tmp_path / "v.safetensors", log=logs.append)
    assert any("ran out after 2 steps" in s for s in logs)
    assert hist[-1]["step"] == 2
    assert (tmp_path / "v.safetensors").is_file()
    with pytest.raises(InputError, match="4k\\+1"):
        train_vae(cfg, [torch.rand(1, 6, 16, 16, 3)], 1, None, log=None)
