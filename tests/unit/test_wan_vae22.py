"""The Wan2.2 VAE (im_animation_core.wan.vae22) against ComfyUI's own comfy.ldm.wan.vae2_2.WanVAE: the same
keys and shapes at full width (built on the meta device), and the same encode (mu) and decode outputs on
the same random weights at small widths (ComfyUI runs in chunks with a feature cache, ours over the whole
clip at once)."""

import pytest
import torch

from im_animation_core.errors import CheckpointError, InputError
from im_animation_core.wan.vae22 import Wan22VAE, Wan22VAEConfig, load_wan22_vae, load_wan22_vae_chunked
from im_animation_core.wan.vae22_layers import patchify, unpatchify
from tools.comfy_path import import_comfyui

DIM, DEC_DIM = 8, 16
REL_TOL = 1e-4

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def comfy():
    import_comfyui()
    import comfy.ldm.wan.vae2_2
    import comfy.model_management  # noqa: F401  (after args.cpu is set)
    import comfy.utils

    return comfy


def comfy_vae22(comfy, dim=DIM, dec_dim=DEC_DIM, seed=0):
    """ComfyUI's Wan2.2 VAE with the stock loader's layout (comfy/sd.py) at the given widths, random weights
    of sane scale: conv weights N(0, 1/fan_in), RMS gains 1 + N(0, 0.1), biases N(0, 0.1)."""
    model = comfy.ldm.wan.vae2_2.WanVAE(dim=dim, dec_dim=dec_dim, z_dim=48, dim_mult=[1, 2, 4, 4], num_res_blocks=2,
                                        attn_scales=[], temperal_downsample=[False, True, True], dropout=0.0)
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
    ref = comfy_vae22(comfy)
    return ref, Wan22VAE.from_state_dict(ref.state_dict()).eval()


def rel_err(a, b):
    return ((a.float() - b.float()).abs().max() / b.float().abs().max()).item()


def shapes(model):
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def test_full_width_keys_and_shapes_are_comfyuis(comfy):
    """At the released sizes (what comfy/sd.py builds for wan2.2_vae.safetensors), on the meta device."""
    with torch.device("meta"):
        ref = comfy.ldm.wan.vae2_2.WanVAE(dim=160, z_dim=48, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
                                          temperal_downsample=[False, True, True], dropout=0.0)
        mine = Wan22VAE()
    assert list(shapes(mine)) == list(shapes(ref))
    assert shapes(mine) == shapes(ref)
    assert not [n for n, _ in mine.named_buffers()]
    config = Wan22VAEConfig.from_state_dict(ref.state_dict())
    assert config == Wan22VAEConfig() and config.stock_loader_problems() == []
    assert (config.spatial_ratio, config.temporal_ratio, config.pixel_channels) == (16, 4, 12)
    assert [config.latent_frames(t) for t in (1, 5, 8, 81)] == [1, 2, 2, 21]


def test_config_from_state_dict_small(pair):
    ref, mine = pair
    config = Wan22VAEConfig.from_state_dict({"first_stage_model." + k: v for k, v in ref.state_dict().items()})
    assert config == mine.config == Wan22VAEConfig(dim=DIM, dec_dim=DEC_DIM)
    assert config.stock_loader_problems() == ["dim 8 != 160", "dec_dim 16 != 256"]
    odd = Wan22VAEConfig(dim=4, dec_dim=6, z_dim=8, dim_mult=(1, 2, 2), num_res_blocks=1,
                         temporal_downsample=(True, False))
    with torch.device("meta"):
        odd_sd = Wan22VAE(odd).state_dict()
    assert Wan22VAEConfig.from_state_dict(odd_sd) == odd


def test_state_dict_errors(pair):
    ref, _ = pair
    sd = ref.state_dict()
    with pytest.raises(CheckpointError, match="not a Wan VAE"):
        Wan22VAEConfig.from_state_dict({"head.modulation": torch.zeros(1, 6, 128)})
    wan21 = {k: v for k, v in sd.items() if k != "decoder.upsamples.0.upsamples.0.residual.2.weight"}
    with pytest.raises(CheckpointError, match="Wan2.1 VAE"):
        Wan22VAEConfig.from_state_dict(wan21)
    bad = dict(sd)
    bad["decoder.conv1.weight"] = bad["decoder.conv1.weight"][:, :8]
    with pytest.raises(CheckpointError, match="does not fit"):
        Wan22VAE.from_state_dict(bad)


def test_patchify_is_comfyuis_and_inverts(comfy):
    x = torch.randn(2, 3, 5, 8, 12)
    assert torch.equal(patchify(x, 2), comfy.ldm.wan.vae2_2.patchify(x, 2))
    assert torch.equal(unpatchify(patchify(x, 2), 2), x)


@pytest.mark.parametrize("frames", [1, 5, 9, 11])
def test_encode_matches_comfyui(pair, frames):
    """mu (and logvar) equal ComfyUI's chunked, feature-cached encode (frame 0, then chunks of 4; 11 frames:
    the last 2 dropped, as ComfyUI drops them)."""
    ref, mine = pair
    x = torch.rand(1, 3, frames, 32, 48, generator=torch.Generator().manual_seed(frames)) * 2 - 1
    captured = {}
    hook = ref.conv1.register_forward_hook(lambda m, i, o: captured.setdefault("out", o))
    try:
        with torch.no_grad():
            want = ref.encode(x)
            mu, logvar = mine.encode_dist(x)
    finally:
        hook.remove()
    assert mu.shape == want.shape == (1, 48, 1 + (frames - 1) // 4, 2, 3)
    assert rel_err(mu, want) < REL_TOL
    assert rel_err(logvar, captured["out"].chunk(2, dim=1)[1]) < REL_TOL
    assert torch.equal(mine.encode(x), mu)


@pytest.mark.parametrize("latent_frames", [1, 2, 3])
def test_decode_matches_comfyui(pair, latent_frames):
    """The decode equals ComfyUI's latent-by-latent cached decode: k+1 latents -> 4k+1 frames, x16 space."""
    ref, mine = pair
    z = torch.randn(1, 48, latent_frames, 2, 3, generator=torch.Generator().manual_seed(latent_frames))
    with torch.no_grad():
        want, got = ref.decode(z), mine.decode(z)
    assert got.shape == want.shape == (1, 3, 4 * (latent_frames - 1) + 1, 32, 48)
    assert rel_err(got, want) < REL_TOL


@pytest.mark.parametrize("chunk", [1, 2])
def test_chunked_encode_and_decode_equal_the_whole_clip_and_comfyui(pair, chunk):
    """chunk > 0 runs frame 0, then 4*chunk frames (decode: chunk latents) at a time, carrying each causal
    layer's past frames (vae.streaming): chunk 1 is ComfyUI's own chunking; 2 exercises multi-frame chunks."""
    ref, mine = pair
    x = torch.rand(1, 3, 13, 32, 32, generator=torch.Generator().manual_seed(5)) * 2 - 1
    z = torch.randn(1, 48, 4, 2, 2, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        whole_mu, whole_logvar = mine.encode_dist(x)
        mu, logvar = mine.encode_dist(x, chunk=chunk)
        want_mu = ref.encode(x)
        whole, got, want = mine.decode(z), mine.decode(z, chunk=chunk), ref.decode(z)
    assert mu.shape == whole_mu.shape == (1, 48, 4, 2, 2)
    assert rel_err(mu, whole_mu) < 1e-5 and rel_err(logvar, whole_logvar) < 1e-5
    assert rel_err(mu, want_mu) < REL_TOL
    assert got.shape == whole.shape == (1, 3, 13, 32, 32)
    assert rel_err(got, whole) < 1e-5 and rel_err(got, want) < REL_TOL
    assert all(m.stream is None for m in mine.modules() if hasattr(m, "stream"))  # streaming state cleared


def test_chunk_default_and_errors(pair):
    _, mine = pair
    x = torch.rand(1, 3, 5, 16, 16, generator=torch.Generator().manual_seed(7)) * 2 - 1
    try:
        mine.chunk = 1
        with torch.no_grad():
            assert rel_err(mine.encode(x), mine.encode(x, chunk=0)) < 1e-5
    finally:
        mine.chunk = 0
    with pytest.raises(InputError, match="chunk"):
        mine.encode(x, chunk=-1)


def test_comfyui_saved_weights_load_here(comfy, tmp_path):
    """A state dict saved from ComfyUI's module as a .safetensors file loads with load_wan22_vae."""
    ref = comfy_vae22(comfy, seed=3)
    path = tmp_path / "comfy_vae22.safetensors"
    comfy.utils.save_torch_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(path))
    mine = load_wan22_vae(path).eval()
    assert mine.config == Wan22VAEConfig(dim=DIM, dec_dim=DEC_DIM)
    z = torch.randn(1, 48, 2, 1, 2, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert rel_err(mine.decode(z), ref.decode(z)) < REL_TOL
    assert load_wan22_vae(path, dtype=torch.bfloat16).dtype == torch.bfloat16
    assert load_wan22_vae_chunked(path).chunk == 1


def test_gradients_reach_every_parameter_and_checkpointing_agrees(pair):
    _, mine = pair
    model = Wan22VAE(mine.config)
    model.load_state_dict(mine.state_dict())
    x = torch.rand(1, 3, 5, 16, 16, generator=torch.Generator().manual_seed(4)) * 2 - 1

    def grads(checkpointing):
        model.zero_grad(set_to_none=True)
        model.set_gradient_checkpointing(checkpointing)
        mu, logvar = model.encode_dist(x)
        ((model.decode(mu) - x).square().mean() + 1e-3 * logvar.square().mean()).backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    plain = grads(False)
    assert set(plain) == {n for n, _ in model.named_parameters()}
    assert all(torch.isfinite(g).all() and g.abs().sum() > 0 for g in plain.values())
    ckpt = grads(True)
    assert all(torch.allclose(ckpt[n], g, rtol=1e-4, atol=1e-7) for n, g in plain.items())


def test_bad_inputs(pair):
    _, mine = pair
    with pytest.raises(InputError, match="multiples of 16"):
        mine.encode(torch.zeros(1, 3, 5, 24, 16))
    with pytest.raises(InputError, match=r"\[B,3,T,H,W\]"):
        mine.encode(torch.zeros(1, 5, 16, 16, 3))
    with pytest.raises(InputError, match=r"\[B,48,F,h,w\]"):
        mine.decode(torch.zeros(1, 16, 2, 2, 2))
