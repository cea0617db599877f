"""The clip cache on real videos (data.kind "video_folder"): a folder of clips with DWPose keypoint JSON is cached
(skipped clips counted in the index), Stages 3 and 2 train from it with the live pipeline's losses on the same
clips, a folder without a usable clip or a cache of another VAE / tokenizer is refused with a clear message."""

import json

import pytest
import torch

from im_animation_core.data import collate_pairs
from im_animation_core.errors import InputError
from im_animation_core.pose_export import pose_keypoint_frames
from im_animation_core.synthetic.character import Identity, Motion
from im_animation_core.synthetic.render import render_sample
from im_animation_core.tokenizer.checkpoint import save_motion_tokenizer
from im_animation_core.train import Trainer, config_from_dict
from im_animation_core.train.__main__ import main as train_main
from im_animation_core.train.build import build_dataset, build_encoder
from im_animation_core.train.cache import CachedClips, CacheError, build_cache, cache_key
from im_animation_core.train.presets import tiny_config_dict, write_tiny_vae

pytest.importorskip("decord")
media = pytest.importorskip("tools.media")

pytestmark = pytest.mark.usefixtures("one_thread")

SIZE, CLIP_FRAMES, FRAMES = 64, 10, 5  # each good clip gives two windows of 5 frames


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A VAE file, a second VAE file of other weights, and two (random, frozen) tokenizer files."""
    base = tmp_path_factory.mktemp("files")
    vae, other_vae = write_tiny_vae(base / "vae.safetensors"), write_tiny_vae(base / "vae_other.safetensors", 1)
    cfg = config_from_dict("stage3", tiny_config_dict("stage3", base / "x"))
    for seed, name in ((0, "tok.safetensors"), (1, "tok_other.safetensors")):
        torch.manual_seed(seed)
        encoder, _ = build_encoder(cfg)
        save_motion_tokenizer(encoder.tokenizer, base / name, dtype=None)
    return {"vae": vae, "vae_other": other_vae, "tok": base / "tok.safetensors",
            "tok_other": base / "tok_other.safetensors"}


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """Two good clips with keypoints as the DWPose exporter writes them (normalised), one clip without its JSON
    and one that is no video."""
    root = tmp_path_factory.mktemp("videos")
    for name, identity, motion in (("a", Identity(center_x=0.45, scale=0.9), Motion(period=10)),
                                   ("b", Identity(center_x=0.55, scale=0.8), Motion(period=7))):
        clip = render_sample(identity, motion, CLIP_FRAMES, SIZE, SIZE)
        media.write_video(root / f"{name}.mp4", clip.frames)
        (root / f"{name}.json").write_text(json.dumps(pose_keypoint_frames(clip.joints, clip.visible, SIZE, SIZE)))
    media.write_video(root / "c_no_json.mp4", clip.frames)
    (root / "d_broken.mp4").write_bytes(b"not a video")
    (root / "d_broken.json").write_text((root / "a.json").read_text())
    return root


def config_dict(tmp_path, files, clips, stage="stage3", **over):
    extra = {"moving_weight": 5.0, "dit_draws": 2} if stage == "stage3" else {}
    d = tiny_config_dict(stage, tmp_path / f"run_{stage}", vae_path=files["vae"], frames=FRAMES, size=SIZE,
                         tokenizer={"path": str(files["tok"]), "trainable": False},
                         data={"kind": "video_folder", "root": str(clips), "augment": False,
                               "cache": str(tmp_path / f"cache_{stage}")}, **extra)
    for k, v in over.items():
        d[k] = v
    return d


def logged_losses(run_dir):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if "loss" in r]


@pytest.mark.parametrize("stage", ["stage3", "stage2"])
def test_a_video_folder_cache_trains_with_the_live_losses(tmp_path, files, clips, stage, capsys):
    cfg = config_from_dict(stage, config_dict(tmp_path, files, clips, stage))
    if stage == "stage3":  # through the command line, as a user builds it
        path = tmp_path / "cfg.json"
        path.write_text(json.dumps(config_dict(tmp_path, files, clips, stage)))
        assert train_main(["cache", "--config", str(path)]) == 0
        assert json.loads(capsys.readouterr().out.splitlines()[-1])["skipped"] == 2
    index = build_cache(stage, cfg)  # a finished cache is reused as it is
    assert index["complete"] and index["clips"] == index["total"] == 4  # 2 good clips x 2 windows
    source = index["source"]
    assert source["clips"] == 2 and source["samples"] == 4
    assert sorted(source["skipped"]) == ["c_no_json.mp4", "d_broken.mp4"]
    assert "keypoints" in source["skipped"]["c_no_json.mp4"]
    cached = CachedClips(cfg.data.cache, cache_key(cfg))
    assert {"tokens", "identity_latent", "target_joints"} <= set(cached[0])

    live_dict = config_dict(tmp_path, files, clips, stage, output_dir=str(tmp_path / "live"))
    live_dict["data"]["cache"] = ""
    live = Trainer(stage, config_from_dict(stage, live_dict))
    from_cache = Trainer(stage, cfg)  # the same seed: the same initial weights
    videos = build_dataset(live.config.data)
    order = (3, 0)
    a = live.evaluate({**collate_pairs([videos[i] for i in order]), "index": torch.tensor(order)}, seed_step=5)
    b = from_cache.evaluate({**collate_pairs([cached[i] for i in order]), "index": torch.tensor(order)}, seed_step=5)
    assert a["loss"] > 0
    for k in a:
        assert a[k] == pytest.approx(b[k], rel=1e-5, abs=1e-7), (k, a, b)

    # two logged optimizer steps each (4 steps, log_every 2): the same losses
    live.train()
    from_cache.train()
    steps_live, steps_cached = logged_losses(tmp_path / "live"), logged_losses(tmp_path / f"run_{stage}")
    assert [r["step"] for r in steps_live] == [r["step"] for r in steps_cached] == [2, 4]
    for x, y in zip(steps_live, steps_cached, strict=True):
        assert x["loss"] == pytest.approx(y["loss"], rel=1e-4), (x, y)


def test_a_cache_of_another_vae_or_tokenizer_is_refused_naming_both_files(tmp_path, files, clips):
    cfg = config_from_dict("stage3", config_dict(tmp_path, files, clips))
    build_cache("stage3", cfg)
    other_vae = config_dict(tmp_path, files, clips)
    other_vae["vae"] = {"path": str(files["vae_other"])}
    pattern = r"another VAE: the cache's is '.*[/\\]vae\.safetensors'.*vae\.path is '.*vae_other\.safetensors'"
    with pytest.raises(CacheError, match=pattern):
        Trainer("stage3", config_from_dict("stage3", other_vae)).train()
    with pytest.raises(CacheError, match=pattern):
        build_cache("stage3", config_from_dict("stage3", other_vae))
    other_tok = config_dict(tmp_path, files, clips)
    other_tok["tokenizer"] = {"path": str(files["tok_other"]), "trainable": False}
    with pytest.raises(CacheError, match=r"another motion encoder: the cache's is '.*[/\\]tok\.safetensors'.*"
                                         r"tokenizer\.path .* is '.*tok_other\.safetensors'"):
        Trainer("stage3", config_from_dict("stage3", other_tok)).train()


def test_a_folder_without_usable_clips_is_a_clear_error_and_writes_nothing(tmp_path, files, clips, capsys):
    empty = tmp_path / "videos"
    empty.mkdir()
    (empty / "x.mp4").write_bytes((clips / "a.mp4").read_bytes())  # a clip, but no keypoints beside it
    d = config_dict(tmp_path, files, clips)
    d["data"]["root"] = str(empty)
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps(d))
    with pytest.raises(InputError, match=r"no usable clip \(x\.mp4: no keypoints file x\.json"):
        build_cache("stage3", config_from_dict("stage3", d))
    assert not (tmp_path / "cache_stage3").exists()
    assert train_main(["cache", "--config", str(path)]) == 2
    assert "no usable clip" in capsys.readouterr().err


def test_a_resume_on_a_changed_folder_is_refused(tmp_path, files, clips, monkeypatch):
    from im_animation_core.train import cache as cache_mod

    folder = tmp_path / "videos"
    folder.mkdir()
    for name in ("a.mp4", "a.json", "b.mp4", "b.json"):
        (folder / name).write_bytes((clips / name).read_bytes())
    d = config_dict(tmp_path, files, clips)
    d["data"]["root"] = str(folder)
    monkeypatch.setattr(cache_mod, "SHARD_SIZE", 2)
    real_save = cache_mod.save_file

    def stop_after_one(tensors, path, metadata=None):
        if "000001" in str(path):
            raise KeyboardInterrupt
        return real_save(tensors, path, metadata=metadata)

    monkeypatch.setattr(cache_mod, "save_file", stop_after_one)
    with pytest.raises(KeyboardInterrupt):
        build_cache("stage3", config_from_dict("stage3", d))
    monkeypatch.setattr(cache_mod, "save_file", real_save)
    (folder / "a.json").unlink()  # clip a drops out: every later item would shift
    with pytest.raises(CacheError, match="other samples .*4 samples then, 2 now"):
        build_cache("stage3", config_from_dict("stage3", d))
