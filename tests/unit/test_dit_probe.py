"""The DiT motion probe (lab/dit_probe.py): a DiT whose motion input is cut scores exactly the same with its
own and with another driver's motion; one that reads the motion does not; the x0 correlations come from the
decoder it is given."""

import pytest
import torch

from im_animation_core.data import SyntheticPairs, collate_pairs
from im_animation_core.eval.dit_probe import probe_dit_motion
from im_animation_core.train import Trainer, config_from_dict
from im_animation_core.train.presets import tiny_config_dict, tiny_vae

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def stage3(tmp_path_factory):
    items = [SyntheticPairs("heldout", 3, frames=5, size=64, seed=5)[i] for i in range(3)]
    cfg = config_from_dict("stage3", tiny_config_dict("stage3", tmp_path_factory.mktemp("probe"), steps=1))
    trainer = Trainer("stage3", cfg, dataset=items, vae=tiny_vae())
    trainer.model.eval()
    return trainer, trainer.stage.prepare(collate_pairs(items))


def test_a_dit_without_motion_input_scores_the_same_with_any_driver(stage3):
    trainer, batch = stage3
    patch = trainer.model.ima.motion_patch
    with torch.no_grad():
        trainer.model.dit.head.head.weight.normal_(0, 0.1, generator=torch.Generator().manual_seed(1))
        patch.weight.zero_()  # the zero-initialised adapter: the DiT cannot see the motion
        patch.bias.zero_()
    rows = probe_dit_motion(trainer.model, batch, decode=None, sigmas=(0.5, 0.9))
    assert [r["sigma"] for r in rows] == [0.5, 0.9]
    for r in rows:
        assert r["loss_own"] == r["loss_other"] and r["moving_own"] == r["moving_other"]
        assert "corr_own" not in r
    # A DiT that reads the motion, given a retargeter whose map depends on the driver (the random tiny tokenizer
    # gives nearly the same tokens for every frame, so its map hardly does): the two scores differ.
    model = trainer.model
    with torch.no_grad():
        patch.weight.normal_(0, 0.5, generator=torch.Generator().manual_seed(0))
        model.dit.head.head.weight.normal_(0, 0.1, generator=torch.Generator().manual_seed(1))  # zero when fresh
    retarget = model.retarget

    def follows_the_driver(b):
        motion, loss, aux = retarget(b)
        return motion + 10 * b["driving"].float().mean(dim=(1, 2, 3, 4)).view(-1, 1, 1, 1, 1), loss, aux

    model.retarget = follows_the_driver
    try:
        rows = probe_dit_motion(model, batch, decode=None, sigmas=(0.9,))
    finally:
        del model.retarget
    assert abs(rows[0]["loss_own"] - rows[0]["loss_other"]) > 1e-4


def test_x0_correlations_use_the_given_decoder(stage3):
    trainer, batch = stage3
    target = batch["target"].float()
    seen = []

    def decode(z):  # pretend the decoder returns the ground truth of the pair it is given
        seen.append(z.shape)
        return target[len(seen) - 1 - 3 * ((len(seen) - 1) // 3)]

    rows = probe_dit_motion(trainer.model, batch, decode=decode, sigmas=(0.5,))
    assert len(seen) == 6 and all(s[0] == 1 and s[2] == 2 for s in seen)  # 3 pairs x (own, other); 2 latent frames
    assert rows[0]["corr_own"] == pytest.approx(1.0) and rows[0]["corr_other"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="at least 2 pairs"):
        probe_dit_motion(trainer.model, {k: v[:1] for k, v in batch.items() if torch.is_tensor(v)}, None)


def test_family_pairs_are_make_evals_pairs_of_that_family_whatever_the_runs_mix():
    from lab.dit_probe import probe_pairs

    options = {"thickness_scale": 2.0, "min_contrast": 0.3}
    data, first = probe_pairs(128, options, 4, None)
    assert first == [0, 1, 2, 3]
    _, waves = probe_pairs(128, {**options, "kind_weights": {"wave": 3.0, "walk": 1.0, "dance": 1.0, "turn": 1.0}},
                           3, "wave")
    assert len(waves) == 3 and waves == sorted(waves)
    assert all(data.parameters(i)[2].kind == "wave" for i in waves if i < 4)
    every, _ = probe_pairs(128, options, 4, "wave")
    assert [every.parameters(i)[2].kind for i in waves] == ["wave"] * 3
