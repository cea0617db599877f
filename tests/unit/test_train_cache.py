"""The clip cache (train.cache): training from it gives the losses of live training on the same clips; a cache of
another config is refused naming the field; an interrupted build leaves no half shard and resumes; an
unfinished cache is refused."""

import json

import pytest
import torch

from im_animation_core.data import SyntheticPairs, collate_pairs
from im_animation_core.tokenizer.checkpoint import save_motion_tokenizer
from im_animation_core.train import Trainer, config_from_dict
from im_animation_core.train import cache as cache_mod
from im_animation_core.train import stages as stages_mod
from im_animation_core.train.build import build_encoder
from im_animation_core.train.cache import CachedClips, CacheError, build_cache, cache_key, read_index
from im_animation_core.train.presets import tiny_config_dict, write_tiny_vae

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A VAE file and a (random, frozen) tokenizer file, as a cache needs both from files."""
    base = tmp_path_factory.mktemp("files")
    vae = write_tiny_vae(base / "vae.safetensors")
    cfg = config_from_dict("stage3", tiny_config_dict("stage3", base / "x"))
    torch.manual_seed(0)
    encoder, _ = build_encoder(cfg)
    save_motion_tokenizer(encoder.tokenizer, base / "tok.safetensors", dtype=None)
    return vae, base / "tok.safetensors"


def stage3_dict(tmp_path, files, **over):
    vae, tok = files
    d = tiny_config_dict("stage3", tmp_path / "run", vae_path=vae, moving_weight=5.0, dit_draws=2,
                         tokenizer={"path": str(tok), "trainable": False}, data={"num_samples": 6, "seed": 3})
    d["data"]["cache"] = str(tmp_path / "cache")
    for k, v in over.items():
        d[k] = v
    return d


@pytest.mark.parametrize("retarget_trainable", [True, False])
def test_cached_training_gives_the_live_losses(tmp_path, files, retarget_trainable):
    over = {}
    if not retarget_trainable:  # a DiT-first phase on a retargeter from a file: its motion maps are cached
        Trainer("stage3", config_from_dict("stage3", stage3_dict(tmp_path, files))).stage.export(tmp_path)
        over = {"retarget_trainable": False, "modules": {"path": str(tmp_path / "im_animation_modules.safetensors")}}
    cfg = config_from_dict("stage3", stage3_dict(tmp_path, files, **over))
    index = build_cache("stage3", cfg)
    assert index["complete"] and index["clips"] == 6
    cached = CachedClips(cfg.data.cache, cache_key(cfg))
    assert {"tokens", "identity_latent", "target_latent", "face_crops", "moving", "target_joints"} <= set(cached[0])
    assert ("retargeted_motion" in cached[0]) != retarget_trainable
    live_dict = stage3_dict(tmp_path, files, **over)
    live_dict["data"]["cache"] = ""
    live_dict["output_dir"] = str(tmp_path / "live")
    live = Trainer("stage3", config_from_dict("stage3", live_dict))
    from_cache = Trainer("stage3", cfg)  # the same seed: the same initial weights

    pairs = SyntheticPairs("train", 6, 5, 64, 3)
    live_batch = {**collate_pairs([pairs[i] for i in (4, 1)]), "index": torch.tensor([4, 1])}
    cached_batch = {**collate_pairs([cached[i] for i in (4, 1)]), "index": torch.tensor([4, 1])}
    a = live.evaluate(live_batch, seed_step=7)
    b = from_cache.evaluate(cached_batch, seed_step=7)
    for k in ("loss", "dit", "dit_moving", "retarget", "token_spread"):
        assert a[k] == pytest.approx(b[k], rel=1e-5, abs=1e-7), (k, a, b)
    assert (a["retarget"] > 0) == retarget_trainable

    # four training steps each: the same logged losses. (Weights are not compared: the cache's encoders ran on
    # batches of 32, the live ones on 2, so rounding differs, and Adam turns the rounding noise of near-zero
    # gradients into full-size steps on a few weights.)
    before = {k: v.clone() for k, v in from_cache.model.ima.retarget.state_dict().items()}
    live.train()
    from_cache.train()
    after = from_cache.model.ima.retarget.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in before.items()) != retarget_trainable

    def logged(run):
        return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps_live = [r for r in logged(tmp_path / "live") if "loss" in r]
    steps_cached = [r for r in logged(tmp_path / "run") if "loss" in r]
    assert [r["step"] for r in steps_live] == [r["step"] for r in steps_cached] == [2, 4]
    for x, y in zip(steps_live, steps_cached, strict=True):
        for k in ("loss", "dit", "retarget"):
            assert x[k] == pytest.approx(y[k], rel=1e-4), (k, x, y)


def test_a_cache_of_another_config_is_refused_naming_the_field(tmp_path, files):
    cfg = config_from_dict("stage3", stage3_dict(tmp_path, files))
    build_cache("stage3", cfg)
    other = stage3_dict(tmp_path, files)
    other["data"]["seed"] = 4
    with pytest.raises(CacheError, match=r"data\.seed \(cache 3, config 4\)"):
        Trainer("stage3", config_from_dict("stage3", other)).train()
    with pytest.raises(CacheError, match=r"data\.seed"):
        build_cache("stage3", config_from_dict("stage3", other))


def test_a_cache_of_frames_that_are_not_square_is_read_back(tmp_path, files):
    d = stage3_dict(tmp_path, files)
    d["data"]["size"] = [32, 64]  # [height, width] from JSON; the key read back from index.json must still match
    build_cache("stage3", config_from_dict("stage3", d))
    trainer = Trainer("stage3", config_from_dict("stage3", d))
    trainer.train()
    assert tuple(int(v) for v in trainer.dataset[0]["frame_size"]) == (32, 64)


def test_an_interrupted_build_leaves_whole_shards_and_resumes(tmp_path, files, monkeypatch):
    cfg = config_from_dict("stage3", stage3_dict(tmp_path, files))
    monkeypatch.setattr(cache_mod, "SHARD_SIZE", 2)
    real_save = cache_mod.save_file
    calls = []

    def failing_save(tensors, path, metadata=None):  # the disk fills while the second shard is written
        calls.append(path)
        if len(calls) == 2:
            with open(path, "wb") as f:
                f.write(b"partial")
            raise OSError(28, "No space left on device")
        return real_save(tensors, path, metadata=metadata)

    monkeypatch.setattr(cache_mod, "save_file", failing_save)
    with pytest.raises(OSError):
        build_cache("stage3", cfg)
    folder = tmp_path / "cache"
    assert sorted(p.name for p in folder.glob("shard_*")) == ["shard_000000.safetensors"]
    with pytest.raises(CacheError, match="unfinished .2 of 6 clips"):
        CachedClips(folder, cache_key(cfg))
    monkeypatch.setattr(cache_mod, "save_file", real_save)
    index = build_cache("stage3", cfg)
    assert index["complete"] and [s["first"] for s in index["shards"]] == [0, 2, 4]
    # the resumed cache holds what an uninterrupted build holds
    fresh = stage3_dict(tmp_path, files)
    fresh["data"]["cache"] = str(tmp_path / "cache2")
    fresh_cfg = config_from_dict("stage3", fresh)
    build_cache("stage3", fresh_cfg)
    a, b = CachedClips(folder, cache_key(cfg)), CachedClips(tmp_path / "cache2", cache_key(fresh_cfg))
    for i in range(6):
        for k, v in a[i].items():
            assert torch.equal(v, b[i][k]), (i, k)


def test_a_missing_cache_and_a_trainable_tokenizer_get_clear_errors(tmp_path, files):
    cfg = config_from_dict("stage3", stage3_dict(tmp_path, files))
    with pytest.raises(CacheError, match="no clip cache in .*build it first"):
        Trainer("stage3", cfg).train()
    build_cache("stage3", cfg)
    (tmp_path / "cache" / "shard_000000.safetensors").unlink()
    with pytest.raises(CacheError, match="shard_000000.safetensors.*rebuild"):
        CachedClips(cfg.data.cache, cache_key(cfg))
    d = stage3_dict(tmp_path, files)
    d["tokenizer"] = {**d["tokenizer"], "trainable": True}
    with pytest.raises(Exception, match="encoder must be frozen"):  # building, and training from a cache
        build_cache("stage3", config_from_dict("stage3", d))
    with pytest.raises(Exception, match="encoder must be frozen"):
        Trainer("stage3", config_from_dict("stage3", d)).train()


def test_a_joint_phase_reads_the_cache_of_its_frozen_retargeter_phase(tmp_path, files):
    Trainer("stage3", config_from_dict("stage3", stage3_dict(tmp_path, files))).stage.export(tmp_path)
    modules = {"path": str(tmp_path / "im_animation_modules.safetensors")}
    frozen = config_from_dict("stage3", stage3_dict(tmp_path, files, retarget_trainable=False, modules=modules))
    build_cache("stage3", frozen)
    joint = config_from_dict("stage3", stage3_dict(tmp_path, files, modules=modules))
    assert len(CachedClips(joint.data.cache, cache_key(joint))) == 6  # the motion maps are extra, unused
    # the other way round the motion maps are missing: refused
    plain = stage3_dict(tmp_path, files, modules=modules)
    plain["data"]["cache"] = str(tmp_path / "plain_cache")
    build_cache("stage3", config_from_dict("stage3", plain))
    wants_maps = stage3_dict(tmp_path, files, retarget_trainable=False, modules=modules)
    wants_maps["data"]["cache"] = plain["data"]["cache"]
    wants_maps = config_from_dict("stage3", wants_maps)
    with pytest.raises(CacheError, match="frozen_retargeter"):
        CachedClips(wants_maps.data.cache, cache_key(wants_maps))
    # nor can the joint phase grow the frozen phase's cache: its new clips would lack the motion maps
    longer = stage3_dict(tmp_path, files, modules=modules)
    longer["data"]["num_samples"] = 8
    with pytest.raises(CacheError, match="motion maps.*grow it with the config it was built with"):
        build_cache("stage3", config_from_dict("stage3", longer))
    assert read_index(tmp_path / "cache")["clips"] == 6  # refused before anything was written


def test_a_frozen_retargeter_is_keyed_by_its_own_tensors(tmp_path, files):
    """A DiT-first phase exports modules whose motion patch and expression modules trained while the retargeter
    stayed frozen: its continuation reads the same cache. Another retargeter is refused."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    Trainer("stage3", config_from_dict("stage3", stage3_dict(tmp_path, files))).stage.export(tmp_path)
    first = tmp_path / "im_animation_modules.safetensors"
    with safe_open(str(first), framework="pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    assert any(k.startswith("retarget.") for k in tensors) and any(not k.startswith("retarget.") for k in tensors)

    def variant(name, change):
        out = {k: (v + 1.0 if change(k) else v) for k, v in tensors.items()}
        save_file(out, str(tmp_path / name), metadata=meta)
        return {"path": str(tmp_path / name)}

    frozen = config_from_dict("stage3", stage3_dict(tmp_path, files, retarget_trainable=False,
                                                    modules={"path": str(first)}))
    build_cache("stage3", frozen)
    trained_rest = variant("rest.safetensors", lambda k: not k.startswith("retarget."))
    cont = config_from_dict("stage3", stage3_dict(tmp_path, files, retarget_trainable=False, modules=trained_rest))
    assert cache_key(cont) == cache_key(frozen)
    assert len(CachedClips(cont.data.cache, cache_key(cont))) == 6
    other = variant("other.safetensors", lambda k: k == "retarget.out.weight")
    refused = config_from_dict("stage3", stage3_dict(tmp_path, files, retarget_trainable=False, modules=other))
    with pytest.raises(CacheError, match="frozen_retargeter"):
        CachedClips(refused.data.cache, cache_key(refused))
    no_retargeter = variant("none.safetensors", lambda k: False)
    save_file({k: v for k, v in tensors.items() if not k.startswith("retarget.")}, no_retargeter["path"], metadata=meta)
    bad = config_from_dict("stage3", stage3_dict(tmp_path, files, retarget_trainable=False, modules=no_retargeter))
    with pytest.raises(Exception, match="holds no retargeter"):
        cache_key(bad)


def test_a_cache_of_generated_clips_grows_and_serves_shorter_configs(tmp_path, files, monkeypatch, caplog):
    """Generated item i does not depend on num_samples: a config with more samples adds only the new clips
    (after a short last shard), one with fewer reads the first clips, and the grown cache holds what a fresh
    build of the larger config holds."""
    monkeypatch.setattr(cache_mod, "SHARD_SIZE", 4)
    small = config_from_dict("stage3", stage3_dict(tmp_path, files))  # 6 clips: shards of 4 and 2
    build_cache("stage3", small)
    big_dict = stage3_dict(tmp_path, files)
    big_dict["data"]["num_samples"] = 9
    big = config_from_dict("stage3", big_dict)
    with pytest.raises(CacheError, match=r"unfinished \(6 of 9 clips\).*cache --config"):
        CachedClips(big.data.cache, cache_key(big))
    built = []
    real_save = cache_mod.save_file
    monkeypatch.setattr(cache_mod, "save_file", lambda t, path, metadata=None: (built.append(metadata["first"]),
                                                                               real_save(t, path, metadata=metadata)))
    index = build_cache("stage3", big)
    assert built == ["6"] and index["complete"] and index["clips"] == 9 and index["total"] == 9
    assert [(s["first"], s["count"]) for s in index["shards"]] == [(0, 4), (4, 2), (6, 3)]
    assert len(CachedClips(small.data.cache, cache_key(small))) == 6  # the shorter config still reads it
    assert build_cache("stage3", small)["clips"] == 9  # and building for it changes nothing
    fresh_dict = stage3_dict(tmp_path, files)
    fresh_dict["data"].update(num_samples=9, cache=str(tmp_path / "fresh"))
    fresh = config_from_dict("stage3", fresh_dict)
    build_cache("stage3", fresh)
    grown, whole = CachedClips(big.data.cache, cache_key(big)), CachedClips(fresh.data.cache, cache_key(fresh))
    assert len(grown) == len(whole) == 9
    for i in range(9):  # clip 8 sits in a batch of 3 there and of 1 here: the VAE's float sums may round apart
        for k, v in grown[i].items():
            torch.testing.assert_close(v, whole[i][k], msg=f"clip {i}, {k}")


def test_a_cache_build_encodes_each_clip_once(tmp_path, files, monkeypatch):
    cfg = config_from_dict("stage3", stage3_dict(tmp_path, files))
    real_encode = stages_mod._encode_video
    encoded = []

    def counting_encode(vae, clips, device):
        encoded.append(tuple(clips.shape[:2]))
        return real_encode(vae, clips, device)

    monkeypatch.setattr(stages_mod, "_encode_video", counting_encode)
    build_cache("stage3", cfg)
    # one identity image and one target clip per shard (the 6 clips fit one), not each twice
    assert sorted(encoded) == [(6, 1), (6, 5)]
