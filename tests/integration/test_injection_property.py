"""The injection leaves the base model intact: with zero-initialised IM-Animation modules, the Wan2.2
IM-Animation Sampler gives exactly the latents of ComfyUI's stock KSampler path.

Both sides run in this process on ComfyUI's own code: the DiT is read by comfy.sd.load_diffusion_model
(what the stock "Load Diffusion Model" node does), the stock side is nodes.common_ksampler (KSampler)
on the latent that Wan22ImageToVideoLatent builds (identity latent in the first frame, noise_mask 0 there,
the latent format's empty value elsewhere). The identity latent is given directly: the 48-channel Wan2.2
VAE cannot be made small (ComfyUI builds it at dim 160, 705 M parameters).
"""

import importlib

import pytest
import torch
from safetensors.torch import save_file

from tools.fixture_models import tiny_modules, tiny_wan_dit_state_dict
from tools.inprocess import PACKAGE, load_pack, stock_first_frame_latent


@pytest.fixture(scope="module")
def comfy():
    load_pack()
    import comfy.sd

    import nodes

    return comfy.sd, nodes


def pack(name):
    return importlib.import_module(f"{PACKAGE}.{name}")


def run_both(comfy, tmp_path, channels: int, zero_adapters: bool, sampler_name="euler", cfg=2.5):
    sd_mod, stock_nodes = comfy
    path = tmp_path / f"dit{channels}.safetensors"
    save_file(tiny_wan_dit_state_dict(seed=1, in_dim=channels, out_dim=channels), str(path))
    model = sd_mod.load_diffusion_model(str(path))
    core = pack("im_animation_core")
    modules = tiny_modules(seed=2, zero_adapters=zero_adapters, latent_channels=channels)
    modules_patcher = pack("nodes.devices").patcher_for(modules.eval())

    g = torch.Generator().manual_seed(3)
    length, h, w = 9, 8, 6
    frames = (length - 1) // 4 + 1
    identity = torch.randn(1, channels, 1, h, w, generator=g)
    rm = core.pipeline.RetargetedMotion(motion=torch.randn(1, modules.retarget.config.out_channels, frames, h, w,
                                                           generator=g),
                                        identity_latent=identity, length=length, width=w * 8, height=h * 8, fps=24.0,
                                        modules=modules_patcher)
    expression = core.pipeline.ExpressionFeatures(tokens=torch.randn(length, 4, 32, generator=g),
                                                  modules=modules_patcher)
    sampler = pack("nodes.sampler")
    ours = sampler.IMAnimationSampler.execute(model, rm, seed=11, steps=3, cfg=cfg, sampler_name=sampler_name,
                                              scheduler="simple", expression=expression).result[0]["samples"]

    text_dim = model.get_model_object("diffusion_model").text_embedding[0].in_features
    empty = pack("nodes.conditioning").empty_conditioning(text_dim)
    (stock,) = stock_nodes.common_ksampler(model, 11, 3, cfg, sampler_name, "simple", empty, empty,
                                           stock_first_frame_latent(model, identity, frames))
    return ours, stock["samples"][:, :, 1:]


@pytest.mark.parametrize("channels", [48, 16])  # Wan2.2 (per-frame timesteps) and Wan2.1-family models
def test_zero_initialised_adapters_reproduce_stock_sampling_bit_for_bit(comfy, tmp_path, channels):
    ours, stock = run_both(comfy, tmp_path, channels, zero_adapters=True)
    assert ours.shape == stock.shape == (1, channels, 3, 8, 6)
    assert torch.isfinite(ours).all()
    assert torch.equal(ours, stock)


def test_trained_adapters_do_change_the_result(comfy, tmp_path):
    """The same comparison fails once the adapters carry weights, so the property above is not vacuous."""
    ours, stock = run_both(comfy, tmp_path, 48, zero_adapters=False)
    assert (ours - stock).abs().max() > 1e-3


@pytest.mark.parametrize("clean", [False, True])  # with a clean reference the carried frames go in clean too
def test_long_clip_runs_in_windows_with_one_progress_bar(comfy, tmp_path, clean):
    sd_mod, _ = comfy
    utils = importlib.import_module("comfy.utils")
    path = tmp_path / "dit.safetensors"
    save_file(tiny_wan_dit_state_dict(seed=1, in_dim=16, out_dim=16), str(path))
    model = sd_mod.load_diffusion_model(str(path))
    core = pack("im_animation_core")
    modules = tiny_modules(seed=2)
    modules.dit.clean_reference = clean
    patcher = pack("nodes.devices").patcher_for(modules.eval())
    length, h, w = 33, 4, 4  # 9 latent frames; windows of 5 latent frames sharing 2
    timesteps = []
    dm = model.get_model_object("diffusion_model")
    handle = dm.register_forward_pre_hook(lambda _, args: timesteps.append(args[1].clone()))
    rm = core.pipeline.RetargetedMotion(motion=torch.randn(1, 8, 9, h, w), identity_latent=torch.randn(1, 16, 1, h, w),
                                        length=length, width=32, height=32, fps=24.0, modules=patcher)
    expression = core.pipeline.ExpressionFeatures(tokens=torch.randn(length, 4, 32), modules=patcher)
    updates, bars, steps = [], [], []  # what the host's hook sends; the bars made; every step given to a bar
    utils.set_progress_bar_global_hook(lambda value, total, preview, node_id=None: updates.append((value, total)))
    bar_class = utils.ProgressBar

    class SpyBar(bar_class):  # the host's own bar (its throttling included), recording what it is given
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            bars.append(self.total)

        def update_absolute(self, value, total=None, preview=None):
            steps.append((value, total))
            super().update_absolute(value, total, preview)

    utils.ProgressBar = SpyBar
    try:
        out = pack("nodes.sampler").IMAnimationSampler.execute(
            model, rm, seed=5, steps=2, cfg=1.0, sampler_name="euler", scheduler="simple", window_frames=17,
            overlap_frames=8, expression=expression).result[0]["samples"]
    finally:
        utils.ProgressBar = bar_class
        utils.set_progress_bar_global_hook(None)
        handle.remove()
    assert out.shape == (1, 16, 9, h, w) and torch.isfinite(out).all()
    if clean:  # window 1: the identity frame kept; windows 2 and 3: it and the carried frame (the rest cross-fade)
        assert [int((t[0] == 0).sum()) for t in timesteps] == [1, 1, 2, 2, 2, 2]
    else:
        assert all(t.shape == (1,) for t in timesteps)
    windows = core.windows.plan_windows(9, 5, 2)
    assert len(windows) == 3
    total = 2 * len(windows)
    assert bars == [total]  # one bar over all windows
    assert [v for v, t in steps if t == total] == list(range(1, total + 1))  # every step of every window, in order
    # What reaches the frontend: v0.8 sends every step, v0.33 throttles (first, last and at most one per 0.1 s);
    # on both, one bar that counts up and ends full.
    assert {t for _, t in updates} == {total}
    values = [v for v, _ in updates]
    assert values[0] == 1 and values[-1] == total and values == sorted(set(values))


def sampler_inputs(comfy, tmp_path, **module_sizes):
    sd_mod, _ = comfy
    path = tmp_path / "dit.safetensors"
    save_file(tiny_wan_dit_state_dict(seed=1), str(path))
    model = sd_mod.load_diffusion_model(str(path))
    core = pack("im_animation_core")
    patcher = pack("nodes.devices").patcher_for(tiny_modules(seed=2, **module_sizes).eval())
    rm = core.pipeline.RetargetedMotion(motion=torch.randn(1, 8, 2, 4, 4), identity_latent=torch.randn(1, 16, 1, 4, 4),
                                        length=5, width=32, height=32, fps=24.0, modules=patcher)
    expression = core.pipeline.ExpressionFeatures(tokens=torch.randn(5, 4, 32), modules=patcher)
    return model, rm, expression


def sample(model, rm, expression):
    return pack("nodes.sampler").IMAnimationSampler.execute(model, rm, seed=0, steps=1, cfg=1.0, sampler_name="euler",
                                                            scheduler="simple", expression=expression)


@pytest.mark.parametrize("sizes, words", [
    ({"dim": 256}, "width 256 but this model's width is 128"),
    ({"depth": 12}, "has 6 blocks but the expression blocks run after blocks [5, 11]"),
])
def test_modules_that_do_not_fit_the_dit_are_refused(comfy, tmp_path, sizes, words):
    model, rm, expression = sampler_inputs(comfy, tmp_path, **sizes)
    with pytest.raises(ValueError, match=r"^Wan2.2 IM-Animation Sampler: .*" + words.replace("[", r"\[")
                       .replace("]", r"\]")):
        sample(model, rm, expression)


def test_a_non_wan_model_is_refused(comfy, tmp_path):
    model, rm, expression = sampler_inputs(comfy, tmp_path)
    other = model.clone()
    other.add_object_patch("diffusion_model", torch.nn.Linear(4, 4))  # what any non-Wan MODEL looks like here
    with pytest.raises(ValueError, match="not a Wan DiT"):
        sample(other, rm, expression)


def test_expression_from_other_modules_is_refused(comfy, tmp_path):
    model, rm, _ = sampler_inputs(comfy, tmp_path)
    _, _, other_expression = sampler_inputs(comfy, tmp_path)
    with pytest.raises(ValueError, match="different IM-Animation modules"):
        sample(model, rm, other_expression)


def test_exported_widened_dit_loads_in_the_stock_loader_and_matches_the_split_form(comfy, tmp_path):
    """A full DiT exported with the widened patch embedding (in_dim = 16 + 8) is read by
    comfy.sd.load_diffusion_model like any Wan model; the sampler feeds it the motion channels without
    patching the embedding, and the result matches the base model + split embedding to float rounding."""
    sd_mod, _ = comfy
    base_sd = tiny_wan_dit_state_dict(seed=1)
    base_path, wide_path = tmp_path / "base.safetensors", tmp_path / "wide.safetensors"
    save_file(base_sd, str(base_path))
    modules = tiny_modules(seed=2)  # non-zero motion weights
    wide_sd = pack("im_animation_core.injection").widened_dit_state_dict(base_sd, modules.motion_patch)
    save_file({k: v.contiguous() for k, v in wide_sd.items()}, str(wide_path))
    wide = sd_mod.load_diffusion_model(str(wide_path))
    assert wide.get_model_object("diffusion_model").patch_embedding.weight.shape[1] == 24

    core = pack("im_animation_core")
    patcher = pack("nodes.devices").patcher_for(modules.eval())
    g = torch.Generator().manual_seed(0)
    rm = core.pipeline.RetargetedMotion(motion=torch.randn(1, 8, 2, 4, 4, generator=g),
                                        identity_latent=torch.randn(1, 16, 1, 4, 4, generator=g), length=5, width=32,
                                        height=32, fps=24.0, modules=patcher)
    split = sample(sd_mod.load_diffusion_model(str(base_path)), rm, None).result[0]["samples"]
    merged = sample(wide, rm, None).result[0]["samples"]
    torch.testing.assert_close(merged, split, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("clean", [True, False])
def test_wan21_model_sees_the_reference_frame_as_the_modules_were_trained(comfy, tmp_path, clean):
    """Modules trained with a clean reference frame (Stage3Config.reference "clean") make the sampler give a
    16-channel (WAN21) model the identity latent clean with timestep 0 at every step, what the trainer's
    Stage3Model.noised_input gives the DiT; modules trained with a noised one leave KSampler's inpainting as is
    (the reference noised to the step's sigma, one timestep per sample)."""
    sd_mod, _ = comfy
    path = tmp_path / "dit.safetensors"
    save_file(tiny_wan_dit_state_dict(seed=1), str(path))
    model = sd_mod.load_diffusion_model(str(path))
    core = pack("im_animation_core")
    modules = tiny_modules(seed=2)
    modules.dit.clean_reference = clean
    patcher = pack("nodes.devices").patcher_for(modules.eval())
    g = torch.Generator().manual_seed(0)
    identity = torch.randn(1, 16, 1, 4, 4, generator=g)
    rm = core.pipeline.RetargetedMotion(motion=torch.randn(1, 8, 2, 4, 4, generator=g), identity_latent=identity,
                                        length=5, width=32, height=32, fps=24.0, modules=patcher)
    seen = []
    dm = model.get_model_object("diffusion_model")
    handle = dm.register_forward_pre_hook(lambda _, args: seen.append((args[0].clone(), args[1].clone())))
    try:
        out = pack("nodes.sampler").IMAnimationSampler.execute(model, rm, seed=0, steps=3, cfg=1.0,
                                                               sampler_name="euler", scheduler="simple")
    finally:
        handle.remove()
    assert torch.isfinite(out.result[0]["samples"]).all()
    assert len(seen) == 3
    reference = model.get_model_object("latent_format").process_in(identity)[:, :, 0]
    for x, t in seen:
        if clean:
            torch.testing.assert_close(x[:, :16, 0], reference, rtol=0, atol=1e-6)
            assert t.shape == (1, 3) and t[0, 0] == 0 and t[0, 1] == t[0, 2] > 0
        else:
            assert t.shape == (1,)
    if not clean:  # the first step is at sigma 1: nothing of the clean reference is left
        assert (seen[0][0][:, :16, 0] - reference).abs().max() > 0.1
