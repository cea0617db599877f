"""The trainable Wan2.1-architecture VAE (im_animation_core.wan.vae) against ComfyUI's own WanVAE: same keys
and shapes, same encode (mu) and decode outputs on the same weights (ComfyUI runs chunked with a feature
cache, ours over the whole clip at once), the same pixel conventions as comfy.sd.VAE, and files that the
stock VAELoader reads (and the other way round)."""

import pytest
import torch

from im_animation_core.errors import CheckpointError, InputError
from im_animation_core.frames import clip_to_video, video_to_clip
from im_animation_core.wan.vae import (
    WanVAE,
    WanVAEConfig,
    load_wan_vae,
    save_wan_vae,
    strip_vae_prefix,
    vae_file_metadata,
)
from tools.comfy_path import import_comfyui

DIM = 8
REL_TOL = 1e-4


@pytest.fixture(scope="module")
def comfy():
    import_comfyui()
    import comfy.ldm.wan.vae
    import comfy.model_management  # noqa: F401  (after args.cpu is set)
    import comfy.sd
    import comfy.utils

    return comfy


pytestmark = pytest.mark.usefixtures("one_thread")


def comfy_vae(comfy, dim=DIM, seed=0):
    """ComfyUI's WanVAE as its stock loader builds a Wan2.1 VAE, with random weights of sane scale: conv
    weights N(0, 1/fan_in), RMS gains 1 + N(0, 0.1), biases N(0, 0.1) (ComfyUI leaves them uninitialised)."""
    model = comfy.ldm.wan.vae.WanVAE(dim=dim, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
                                     temperal_downsample=[False, True, True], dropout=0.0)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            if name.endswith("gamma"):
                p.copy_(1 + 0.1 * noise)
            elif p.ndim >= 2:
                p.copy_(noise / p[0].numel() ** 0.5)
            else:
                p.copy_(0.1 * noise)
    return model.eval()


@pytest.fixture(scope="module")
def pair(comfy):
    ref = comfy_vae(comfy)
    return ref, WanVAE.from_state_dict(ref.state_dict()).eval()


def rel_err(a, b):
    return ((a.float() - b.float()).abs().max() / b.float().abs().max()).item()


def shapes(model):
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


@pytest.mark.parametrize("dim", [8, 96])
def test_keys_and_shapes_are_comfyuis(comfy, dim):
    """The same parameter names and shapes as ComfyUI's WanVAE for a tiny width and the released one (96)."""
    with torch.device("meta"):
        ref = comfy.ldm.wan.vae.WanVAE(dim=dim, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
                                       temperal_downsample=[False, True, True])
        mine = WanVAE(WanVAEConfig(dim=dim))
    assert shapes(mine) == shapes(ref)
    assert not [n for n, _ in mine.named_buffers()]


def test_config_from_state_dict(comfy, pair):
    ref, _ = pair
    sd = ref.state_dict()
    config = WanVAEConfig.from_state_dict(sd)
    assert config == WanVAEConfig(dim=DIM)
    assert config.stock_loader_problems() == []
    assert config.spatial_ratio == 8 and config.temporal_ratio == 4
    assert [config.latent_frames(t) for t in (1, 5, 8, 9)] == [1, 2, 2, 3]
    assert WanVAEConfig.from_state_dict({"first_stage_model." + k: v for k, v in sd.items()}) == config
    assert set(strip_vae_prefix({"vae." + k: v for k, v in sd.items()})) == set(sd)
    # a non-stock layout is read back too, and flagged as one the stock loader would build differently
    odd = WanVAEConfig(dim=4, dim_mult=(1, 2, 2), num_res_blocks=1, temporal_downsample=(False, True))
    with torch.device("meta"):
        odd_sd = WanVAE(odd).state_dict()
    assert WanVAEConfig.from_state_dict(odd_sd) == odd
    assert odd.stock_loader_problems()


def test_state_dict_errors(pair):
    ref, _ = pair
    sd = ref.state_dict()
    with pytest.raises(CheckpointError, match="not a Wan VAE"):
        WanVAEConfig.from_state_dict({"head.modulation": torch.zeros(1, 6, 128)})
    with pytest.raises(CheckpointError, match="Wan2.2 VAE"):
        WanVAEConfig.from_state_dict({**sd, "decoder.upsamples.0.upsamples.0.residual.2.weight": torch.zeros(1)})
    bad = dict(sd)
    bad["decoder.conv1.weight"] = bad["decoder.conv1.weight"][:, :8]
    with pytest.raises(CheckpointError, match="does not fit"):
        WanVAE.from_state_dict(bad)


@pytest.mark.parametrize("frames", [1, 5, 9])
def test_encode_matches_comfyui(pair, frames):
    """mu (and logvar) equal ComfyUI's chunked, feature-cached encode: first frame, then chunks of 4."""
    ref, mine = pair
    x = torch.rand(1, 3, frames, 16, 24, generator=torch.Generator().manual_seed(frames)) * 2 - 1
    captured = {}
    hook = ref.conv1.register_forward_hook(lambda m, i, o: captured.setdefault("out", o))
    try:
        with torch.no_grad():
            want = ref.encode(x)
            mu, logvar = mine.encode_dist(x)
    finally:
        hook.remove()
    assert mu.shape == want.shape == (1, 16, 1 + (frames - 1) // 4, 2, 3)
    assert rel_err(mu, want) < REL_TOL
    assert rel_err(logvar, captured["out"].chunk(2, dim=1)[1]) < REL_TOL
    assert torch.equal(mine.encode(x), mu)


def test_encode_drops_trailing_frames_like_comfyui(pair):
    ref, mine = pair
    x = torch.rand(1, 3, 7, 16, 16, generator=torch.Generator().manual_seed(7)) * 2 - 1
    with torch.no_grad():
        want, got = ref.encode(x), mine.encode(x)
    assert got.shape == want.shape == (1, 16, 2, 2, 2)
    assert rel_err(got, want) < REL_TOL


@pytest.mark.parametrize("latent_frames", [1, 2, 3])
def test_decode_matches_comfyui(pair, latent_frames):
    """The decode equals ComfyUI's latent-by-latent cached decode: k+1 latents -> 4k+1 frames."""
    ref, mine = pair
    z = torch.randn(1, 16, latent_frames, 2, 3, generator=torch.Generator().manual_seed(latent_frames))
    with torch.no_grad():
        want, got = ref.decode(z), mine.decode(z)
    assert got.shape == want.shape == (1, 3, 4 * (latent_frames - 1) + 1, 16, 24)
    assert rel_err(got, want) < REL_TOL


def test_comfy_sd_vae_end_to_end(comfy, pair):
    """comfy.sd.VAE takes IMAGE [T,H,W,3] in [0,1] (x*2-1 before encoding) and returns [1,T,H,W,3] clamped
    (y+1)/2: our encode/decode on [-1,1] video agree with it through clip_to_video / video_to_clip."""
    _, mine = pair
    vae = comfy.sd.VAE(sd=mine.wan_state_dict(), device=torch.device("cpu"), dtype=torch.float32)
    assert vae.latent_channels == 16 and vae.first_stage_model.encoder.conv1.weight.shape[0] == DIM
    images = torch.rand(9, 16, 24, 3, generator=torch.Generator().manual_seed(1))
    latent = vae.encode(images)
    with torch.no_grad():
        mu = mine.encode(clip_to_video(images))
    assert latent.shape == mu.shape == (1, 16, 3, 2, 3)
    assert rel_err(mu, latent) < REL_TOL
    decoded = vae.decode(latent)
    with torch.no_grad():
        ours = video_to_clip(mine.decode(mu))
    assert decoded.shape == ours.shape == (1, 9, 16, 24, 3)
    assert (ours - decoded).abs().max().item() < REL_TOL * 4


def test_saved_file_loads_in_stock_vaeloader(comfy, pair, tmp_path, monkeypatch):
    """A file of save_wan_vae loads through ComfyUI's VAELoader node (detected as a Wan2.1 VAE, width from
    decoder.head.0.gamma) with the same outputs; and load_wan_vae reads it back exactly."""
    import folder_paths

    import nodes

    _, mine = pair
    path = save_wan_vae(mine, tmp_path / "tiny_wan_vae.safetensors")
    assert vae_file_metadata(path)["dim"] == DIM
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "vae", ([str(tmp_path)], {".safetensors"}))
    (vae,) = nodes.VAELoader().load_vae("tiny_wan_vae.safetensors")
    assert vae.latent_channels == 16 and vae.upscale_ratio[1:] == (8, 8)
    assert type(vae.first_stage_model) is comfy.ldm.wan.vae.WanVAE
    assert shapes(vae.first_stage_model) == shapes(mine)
    images = torch.rand(5, 16, 24, 3, generator=torch.Generator().manual_seed(2))
    tol = REL_TOL if vae.vae_dtype == torch.float32 else 3e-2  # ComfyUI picks bf16 on a GPU
    with torch.no_grad():
        assert rel_err(mine.encode(clip_to_video(images)), vae.encode(images)) < tol
    back = load_wan_vae(path)
    assert back.config == mine.config
    assert all(torch.equal(back.state_dict()[k], v) for k, v in mine.state_dict().items())
    half = load_wan_vae(save_wan_vae(mine, tmp_path / "half.safetensors", dtype=torch.float16))
    assert half.dtype == torch.float16


def test_comfyui_saved_weights_load_here(comfy, tmp_path):
    """The other way: a state dict saved from ComfyUI's module (as a .safetensors file) loads with load_wan_vae."""
    ref = comfy_vae(comfy, seed=3)
    path = tmp_path / "comfy_vae.safetensors"
    comfy.utils.save_torch_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(path))
    mine = load_wan_vae(path).eval()
    z = torch.randn(1, 16, 2, 2, 2, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert rel_err(mine.decode(z), ref.decode(z)) < REL_TOL


def test_gradients_reach_every_parameter_and_checkpointing_agrees(pair):
    _, mine = pair
    model = WanVAE(mine.config)
    model.load_state_dict(mine.state_dict())
    x = torch.rand(1, 3, 5, 8, 8, generator=torch.Generator().manual_seed(4)) * 2 - 1

    def grads(checkpointing):
        model.zero_grad(set_to_none=True)
        model.set_gradient_checkpointing(checkpointing)
        recon, mu, logvar = model(x, sample=False)
        ((recon - x).square().mean() + 1e-3 * logvar.square().mean()).backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    plain = grads(False)
    assert set(plain) == {n for n, _ in model.named_parameters()}
    assert all(torch.isfinite(g).all() and g.abs().sum() > 0 for g in plain.values())
    ckpt = grads(True)
    assert all(torch.allclose(ckpt[n], g, rtol=1e-4, atol=1e-7) for n, g in plain.items())


def test_bad_inputs(pair):
    _, mine = pair
    with pytest.raises(InputError, match="multiples of 8"):
        mine.encode(torch.zeros(1, 3, 5, 20, 16))
    with pytest.raises(InputError, match=r"\[B,3,T,H,W\]"):
        mine.encode(torch.zeros(1, 5, 16, 16, 3))
    with pytest.raises(InputError, match=r"\[B,16,F,h,w\]"):
        mine.decode(torch.zeros(1, 48, 2, 2, 2))
    with pytest.raises(InputError, match="4k\\+1"):
        clip_to_video(torch.zeros(1, 6, 16, 16, 3))
