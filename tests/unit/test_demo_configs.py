"""The demo recipes' phases (configs/demo64.json, configs/demo128.json; docs/training.md) and the ablation runner's
variants are valid configs, and chain into each other: each stage reads the files the stage before it writes."""

import dataclasses
import importlib.util
import json
import os
import shutil
import sys
from pathlib import Path

import pytest

from im_animation_core.train.__main__ import _apply_sets
from im_animation_core.train.config import config_from_dict
from im_animation_core.train.outputs import outputs_path
from im_animation_core.train.recipe import load_recipe, phase_config
from tools.demo_set import DEMO_NAMES

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "configs" / "demo64.json"
DEMO128 = REPO / "configs" / "demo128.json"


def d64(name: str) -> dict:
    """The resolved config of a phase of the 64-pixel recipe."""
    return phase_config(load_recipe(DEMO), name)


def d128(name: str) -> dict:
    return phase_config(load_recipe(DEMO128), name)


def load_config(stage: str, name: str):
    """A phase of the 128-pixel recipe as its stage's config."""
    return config_from_dict(stage, d128(name))


STAGE_PHASES = [p["name"] for p in load_recipe(DEMO)["phases"] if p["stage"].startswith("stage")]


def ablation_runner():
    spec = importlib.util.spec_from_file_location("ablations", REPO / "lab" / "ablations.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def ablation_variants() -> dict[str, list[str]]:
    return ablation_runner().VARIANTS


@pytest.mark.parametrize("name", STAGE_PHASES)
def test_every_demo_stage_config_loads_and_validates(name):
    config_from_dict(name[:6], d64(name))


def test_the_demo_stages_read_what_the_stage_before_wrote():
    s1, s2, s3 = (d64(n) for n in ("stage1", "stage2", "stage3"))
    tokenizer = f"{s1['output_dir']}/motion_tokenizer.safetensors"
    assert s2["tokenizer"]["path"] == tokenizer == s3["tokenizer"]["path"]
    assert s3["modules"]["path"] == f"{s2['output_dir']}/im_animation_modules.safetensors"
    prior = d64("stage3_prior")
    assert s3["dit"]["path"] == f"{prior['output_dir']}/wan_dit.safetensors"
    # A trainable tokenizer collapsed in the first demo's Stage 2 (docs/training.md): both stages freeze it.
    assert s2["tokenizer"]["trainable"] is False and s3["tokenizer"]["trainable"] is False
    # The continuation reads Stage 3's exports and keeps the tokenizer frozen.
    more = d64("stage3_more")
    assert more["dit"]["path"] == f"{s3['output_dir']}/wan_dit.safetensors"
    assert more["modules"]["path"] == f"{s3['output_dir']}/im_animation_modules.safetensors"
    assert more["tokenizer"] == s3["tokenizer"] and more["moving_weight"] > 0
    # Its continuation with 8 noise draws per clip reads its exports.
    draws = d64("stage3_draws")
    assert draws["dit"]["path"] == f"{more['output_dir']}/wan_dit.safetensors"
    assert draws["modules"]["path"] == f"{more['output_dir']}/im_animation_modules.safetensors"
    assert draws["tokenizer"] == more["tokenizer"] and draws["dit_draws"] > 1
    # Its continuation with a clean reference frame and a decaying rate is the 64-pixel demo set.
    clean = d64("stage3_clean")
    assert clean["dit"]["path"] == f"{draws['output_dir']}/wan_dit.safetensors"
    assert clean["modules"]["path"] == f"{draws['output_dir']}/im_animation_modules.safetensors"
    assert clean["tokenizer"] == draws["tokenizer"] and clean["reference"] == "clean"
    assert 0 < clean["optim"]["decay_steps"] <= clean["steps"]


def test_every_ablation_variant_is_a_valid_stage2_config_with_a_frozen_encoder_but_the_first_recipe():
    variants = ablation_variants()
    assert {"full", "conv_encoder", "self_attention", "first_recipe"} <= set(variants)
    for name, sets in variants.items():
        data = _apply_sets(d64("stage2"), [f"output_dir=runs/x/{name}", *sets])
        c = config_from_dict("stage2", data)
        frozen = not (c.conv_encoder.trainable if c.motion_encoder == "conv" else c.tokenizer.trainable)
        assert frozen == (name != "first_recipe"), name


@pytest.mark.parametrize("argv, budget", [([], None), (["--steps", "200", "--batch-size", "4"], (200, 4))])
def test_the_ablation_runs_get_the_demo_stage2_budget_unless_told_otherwise(monkeypatch, tmp_path, argv, budget):
    runner = ablation_runner()
    commands = []
    monkeypatch.setattr(runner.subprocess, "run", lambda cmd, **_: commands.append(cmd) or
                        type("Done", (), {"returncode": 0})())
    monkeypatch.setattr("sys.argv", ["ablations.py", "--out", str(tmp_path), "--seeds", "0", *argv])
    assert runner.main() == 0
    stage2 = d64("stage2")
    expected = budget or (stage2["steps"], stage2["batch_size"])
    assert len(commands) == 3  # the paper's three variants
    for cmd in commands:
        sets = [cmd[i + 1] for i, a in enumerate(cmd) if a == "--set"]
        c = config_from_dict("stage2", _apply_sets(d64("stage2"), sets))
        assert (c.steps, c.batch_size) == expected


def train_demo():
    spec = importlib.util.spec_from_file_location("train_demo", REPO / "lab" / "train_demo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def package_demo(monkeypatch):
    spec = importlib.util.spec_from_file_location("package_demo", REPO / "lab" / "package_demo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_128_pixel_chain_reads_what_each_step_wrote_and_runs_every_config(monkeypatch):
    from im_animation_core.train.vae_stage import VAEStageConfig

    vae8 = VAEStageConfig.from_dict(d128("vae"))
    vae = VAEStageConfig.from_dict(d128("vae16"))
    assert vae.init == vae8.output and vae.train.vae.dim == 2 * vae8.train.vae.dim  # widened, then trained
    s1, s2, s3 = (load_config(s, n) for s, n in
                  (("stage1", "stage1"), ("stage2", "stage2"), ("stage3", "stage3_dit")))
    tokenizer = f"{s1.output_dir}/motion_tokenizer.safetensors"
    assert s2.tokenizer.path == tokenizer == s3.tokenizer.path
    assert not s2.tokenizer.trainable and not s3.tokenizer.trainable
    assert s2.vae.path == vae.output == s3.vae.path
    # each later Stage-2 run continues the one before it; the DiT-first phase reads the last
    chain = [load_config("stage2", n) for n in train_demo().STAGE2_CHAIN]
    assert chain[0].output_dir == s2.output_dir and not chain[0].modules.path
    for before, after in zip(chain, chain[1:], strict=False):
        assert after.modules.path == f"{before.output_dir}/im_animation_modules.safetensors"
        assert after.tokenizer.path == tokenizer and after.vae.path == vae.output and after.data.size == 128
    assert s3.modules.path == f"{chain[-1].output_dir}/im_animation_modules.safetensors"
    assert {c.data.options.get("self_pair_fraction", 0.0) for c in chain} == {0.0, 0.5, 1.0}
    # one domain: 128-pixel frames with thick, contrasting limbs everywhere
    for d in (vae8.data, vae.data, s1.data, s2.data, s3.data):
        assert d.size == 128 and d.options == {"thickness_scale": 2.0, "min_contrast": 0.3}
    # the DiT-first phase trains from the clip cache, with the Stage-2 retargeter frozen
    assert s3.data.cache and not s3.retarget_trainable
    # the chain script runs every phase of the recipe but its trials, each once, in the recipe's order
    commands = [" ".join(cmd) for _, cmd, _ in train_demo().STEPS]
    recipe = load_recipe(DEMO128)["phases"]
    assert [n for n, _, _ in train_demo().STEPS] == [p["name"] for p in recipe if not p.get("trial")]
    training = [p["name"] for p in recipe if p["stage"] in ("vae", "stage1", "stage2", "stage3") and not p.get("trial")]
    for name in training:
        assert sum(c.endswith(f" --recipe configs/demo128.json --phase {name}") for c in commands) == 1, name
    chain = ("vae", "vae16", "stage1", "stage2")
    order = [next(i for i, c in enumerate(commands) if c.endswith(f" --phase {n}")) for n in chain]
    assert order == sorted(order)
    # each DiT phase continues from the weights the one before it exported, on the same cache and domain
    td = train_demo()
    dit_chain = [load_config("stage3", n) for n in td.STAGE3_CHAIN]
    assert dit_chain[0].output_dir == s3.output_dir
    seeds = {s3.data.cache: s3.data.seed}  # {cache folder: the generator seed of its clips}
    for before, after in zip(dit_chain, dit_chain[1:], strict=False):
        assert after.dit.path == f"{before.output_dir}/wan_dit.safetensors"
        assert after.modules.path == f"{before.output_dir}/im_animation_modules.safetensors"
        if after.device == "cuda":  # a GPU phase: the same generator and domain, live (uncached) clips
            assert dataclasses.replace(after.data, num_samples=s3.data.num_samples, cache=s3.data.cache,
                                       num_workers=s3.data.num_workers) == s3.data
            assert not after.data.cache and after.data.num_samples > td.CACHES[s3.data.cache][1]
        else:  # the same domain; a cache folder of its own holds clips of another generator seed
            same_generator = dataclasses.replace(after.data, num_samples=s3.data.num_samples) == s3.data
            fresh_clips = (dataclasses.replace(after.data, num_samples=s3.data.num_samples, seed=s3.data.seed,
                                               cache=s3.data.cache) == s3.data
                           and after.data.cache not in seeds and after.data.seed not in seeds.values())
            assert same_generator or fresh_clips, after.output_dir
            assert after.device == "cpu"
            seeds.setdefault(after.data.cache, after.data.seed)
        if before.data.cache and before.data.cache == after.data.cache:  # the cached clips only grow
            assert after.data.num_samples >= before.data.num_samples
        assert (after.tokenizer, after.vae, after.shift) == (s3.tokenizer, s3.vae, s3.shift)
        assert after.output_dir != before.output_dir
    # the chain builds each cache once, before the first phase reading it, for the phase reading it that reads
    # the most clips; the first is read by the DiT-first phase and by later ones reading more of it
    cached = [c for c in dit_chain if c.data.cache]
    assert set(td.CACHES) == {c.data.cache for c in cached} and td.FIRST_CACHE == s3.data.cache
    for folder, (phase, clips) in td.CACHES.items():
        readers = [c for c in cached if c.data.cache == folder]
        assert phase == Path(readers[0].output_dir).name and clips == max(c.data.num_samples for c in readers)
        build = next(i for i, c in enumerate(commands) if f" cache --recipe configs/demo128.json --phase {phase} " in c)
        assert f"data.num_samples={clips}" in commands[build]
        assert commands[build + 1].endswith(f" stage3 --recipe configs/demo128.json --phase {phase}")
    assert td.CACHES[s3.data.cache][1] > s3.data.num_samples
    assert td.GPU_PHASES == tuple(n for n, c in zip(td.STAGE3_CHAIN, dit_chain, strict=True) if c not in cached)
    # the phases with the retargeter frozen come first; once the joint phase trains it, it stays trainable
    trainable = [c.retarget_trainable for c in dit_chain]
    assert trainable == sorted(trainable) and not trainable[0]
    # package_demo copies the chain's last DiT run and its dim-16 VAE into models/ by default
    defaults = package_demo(monkeypatch).parser().parse_args([])
    assert (defaults.stage3, defaults.vae) == (dit_chain[-1].output_dir, vae.output)


def test_the_chain_saves_finished_steps_for_git_and_restores_them(tmp_path, monkeypatch):
    td = train_demo()
    monkeypatch.setattr(td, "REPO", tmp_path)
    monkeypatch.setattr(td, "COMMITTED", tmp_path / "lab" / "runs" / "demo128")
    stage1 = tmp_path / "runs" / "demo128" / "stage1"
    stage1.mkdir(parents=True)
    for f in ("motion_tokenizer.safetensors", "config.yaml", "heatmap_head.safetensors", "config.json"):
        (stage1 / f).write_text(f)
    (tmp_path / "runs" / "demo128" / "stage2").mkdir()
    (tmp_path / "runs" / "demo128" / "stage2" / "config.json").write_text("unfinished")
    td.save_outputs()
    assert not (tmp_path / "lab" / "runs" / "demo128" / "stage1").exists()  # not finished: no outputs.json yet
    (stage1 / "outputs.json").write_text("{}")
    td.save_outputs()
    saved = sorted(p.name for p in (tmp_path / "lab" / "runs" / "demo128" / "stage1").iterdir())
    assert saved == sorted(["motion_tokenizer.safetensors", "config.yaml", "heatmap_head.safetensors", "config.json",
                            "outputs.json"])
    assert not (tmp_path / "lab" / "runs" / "demo128" / "stage2").exists()
    shutil.rmtree(tmp_path / "runs")
    td.restore_outputs()
    assert (stage1 / "config.yaml").read_text() == "config.yaml"
    assert td.done("stage1", td.outputs_path("runs/demo128/stage1"))

    # Once the demo set holds the same bytes (the tokenizer Stage 1 wrote is the demo set's), the step's copy is
    # dropped from lab/runs/demo128/ and restored from the demo set's file.
    demo_tokenizer = tmp_path / td.DEMO_SET["tokenizer"]
    demo_tokenizer.parent.mkdir(parents=True)
    demo_tokenizer.write_text("motion_tokenizer.safetensors")
    td.save_outputs()
    assert not (tmp_path / "lab/runs/demo128/stage1/motion_tokenizer.safetensors").exists()
    assert (tmp_path / "lab/runs/demo128/stage1/heatmap_head.safetensors").is_file()
    shutil.rmtree(tmp_path / "runs")
    td.restore_outputs()
    assert (stage1 / "motion_tokenizer.safetensors").read_text() == "motion_tokenizer.safetensors"
    assert td.done("stage1", td.outputs_path("runs/demo128/stage1"))
    # a demo set whose tokenizer has changed since then does not stand for the step's output
    shutil.rmtree(tmp_path / "runs")
    demo_tokenizer.write_text("another tokenizer")
    td.restore_outputs()
    assert not (stage1 / "motion_tokenizer.safetensors").exists() and (stage1 / "config.yaml").is_file()


def _vae_file(path: Path, config: dict, **changes) -> None:
    """A stand-in VAE file whose recorded training is config's (the trainer records more settings than the
    config gives), with ``changes`` to the recorded VAE settings."""
    import torch
    from safetensors.torch import save_file

    recorded = {"steps": config["steps"], **config["train"], "betas": [0.9, 0.99], "device": "cpu",
                "vae": {**config["train"]["vae"], "z_dim": 16, **changes}}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({"w": torch.zeros(2)}, str(path), metadata={"im_animation_vae_train": json.dumps(recorded)})


def test_the_dim16_vae_is_committed_once_as_the_demo_sets_vae(tmp_path, monkeypatch):
    """Once package_demo made the dim-16 VAE the demo's VAE (models/vae/), --save leaves it out of
    lab/runs/demo128/vae16/ and --restore takes it from models/vae/, but only a VAE trained by phase vae16."""
    td = train_demo()
    monkeypatch.setattr(td, "REPO", tmp_path)
    monkeypatch.setattr(td, "COMMITTED", tmp_path / "lab" / "runs" / "demo128")
    config = d128("vae16")
    (run_vae, packaged), = ((k, v) for k, v in td.PACKAGED.items() if "/vae16/" in k)
    assert run_vae in td.KEEP["vae16"] and packaged == f"models/vae/{DEMO_NAMES['vae']}"  # make demo's VAE
    _vae_file(tmp_path / run_vae, config)
    (tmp_path / "runs/demo128/vae16/metrics.jsonl").write_text("{}\n")
    (tmp_path / packaged).parent.mkdir(parents=True)
    shutil.copyfile(tmp_path / run_vae, tmp_path / packaged)  # what package_demo does
    td.save_outputs()
    assert sorted(p.name for p in (tmp_path / "lab/runs/demo128/vae16").iterdir()) == ["metrics.jsonl"]

    shutil.rmtree(tmp_path / "runs")
    td.restore_outputs()
    assert (tmp_path / run_vae).read_bytes() == (tmp_path / packaged).read_bytes()
    assert (tmp_path / "runs/demo128/vae16/metrics.jsonl").is_file()
    assert td.done("vae16", run_vae)

    # A demo VAE of another training (the 64-pixel set's dim-8 VAE, say) is not the vae16 step's output.
    shutil.rmtree(tmp_path / "runs")
    _vae_file(tmp_path / packaged, config, dim=8)
    td.restore_outputs()
    assert not (tmp_path / run_vae).exists() and (tmp_path / "runs/demo128/vae16/metrics.jsonl").is_file()
    # A copy in lab/runs/demo128/ is still restored as before.
    _vae_file(td.committed_path(run_vae), config)
    td.restore_outputs()
    assert (tmp_path / run_vae).read_bytes() == td.committed_path(run_vae).read_bytes()


def test_the_latest_dit_phase_is_committed_once_as_the_demo_set(tmp_path, monkeypatch):
    """The latest DiT phase's weights are the demo set's files: --save records their SHA-256 instead of copying
    them, and --restore puts them back into runs/ only while the demo set still holds those bytes."""
    td = train_demo()
    monkeypatch.setattr(td, "REPO", tmp_path)
    monkeypatch.setattr(td, "COMMITTED", tmp_path / "lab" / "runs" / "demo128")
    run = tmp_path / "runs" / "demo128" / td.LATEST_STAGE3
    run.mkdir(parents=True)
    for f in td.KEEP[td.LATEST_STAGE3]:
        (tmp_path / f).write_text(f"{f} bytes")
    weights = [f for f in td.KEEP[td.LATEST_STAGE3] if f in td.PACKAGED]
    assert len(weights) == 3 and {td.PACKAGED[f] for f in weights} == {f"models/{k}/{DEMO_NAMES[k2]}" for k, k2 in
                                                                       (("diffusion_models", "dit"),
                                                                        ("im_animation", "modules"),
                                                                        ("im_animation", "tokenizer"))}
    for f in weights:  # what package_demo does
        (tmp_path / td.PACKAGED[f]).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(tmp_path / f, tmp_path / td.PACKAGED[f])
    td.save_outputs()
    assert sorted(p.name for p in (tmp_path / "lab/runs/demo128" / td.LATEST_STAGE3).iterdir()) == sorted(
        ["config.yaml", "config.json", "outputs.json", "metrics.jsonl"])
    assert set(json.loads((tmp_path / td.PACKAGED_RECORD).read_text())) == set(weights)

    shutil.rmtree(tmp_path / "runs")
    td.restore_outputs()
    for f in weights:
        assert (tmp_path / f).read_text() == f"{f} bytes"
    assert td.done(td.STAGE3_CHAIN[0], "unused")  # the continuation's output stands for the runs before it

    # A continuation added to the chain after --save (PACKAGED then names its run, not trained yet): the record
    # still says which run the demo set's weights came from, and they go back there.
    shutil.rmtree(tmp_path / "runs")
    saved = (tmp_path / td.PACKAGED_RECORD).read_text()
    record = {f.replace(td.LATEST_STAGE3, td.STAGE3_CHAIN[-2]): sha for f, sha in json.loads(saved).items()}
    (tmp_path / td.PACKAGED_RECORD).write_text(json.dumps(record))
    td.restore_outputs()
    for f in weights:
        assert (tmp_path / f.replace(td.LATEST_STAGE3, td.STAGE3_CHAIN[-2])).read_text() == f"{f} bytes"
        assert not (tmp_path / f).exists()
    (tmp_path / td.PACKAGED_RECORD).write_text(saved)

    # A demo set packaged from another run since then is not this step's output.
    shutil.rmtree(tmp_path / "runs")
    (tmp_path / td.PACKAGED[weights[0]]).write_text("other weights")
    td.restore_outputs()
    assert not (tmp_path / weights[0]).exists() and (tmp_path / weights[1]).is_file()


def test_package_demo_limits_models_as_a_whole(tmp_path, monkeypatch):
    """The 60 MB limit is on everything under models/ (the 128-pixel chain's committed outputs too), not on the
    four files package_demo copies."""
    import sys

    pd = package_demo(monkeypatch)
    models = tmp_path / "models"
    monkeypatch.setattr(pd, "REPO", tmp_path)
    monkeypatch.setattr(pd, "MODELS", models)
    monkeypatch.setattr(pd, "SOURCES", {k: models / k / name for k, name in DEMO_NAMES.items()})
    monkeypatch.setattr(pd, "LIMIT_MB", 1e-3)  # 1000 bytes
    run = tmp_path / "runs" / "stage3"
    run.mkdir(parents=True)
    for kind in ("dit", "motion_tokenizer", "modules", "vae"):
        (run / kind).write_bytes(b"x" * 100)
    monkeypatch.setattr(pd, "run_file", lambda folder, kind: folder / kind)
    monkeypatch.setattr(sys, "argv", ["package_demo.py", "--stage3", "runs/stage3", "--vae", "runs/stage3/vae"])
    (models / "demo128" / "stage1").mkdir(parents=True)
    other = models / "demo128" / "stage1" / "weights.safetensors"
    other.write_bytes(b"y" * 700)
    assert pd.main() == 1  # 400 bytes copied, 1100 in models/
    assert pd.models_size(models) == 1100 and (models / "dit" / DEMO_NAMES["dit"]).stat().st_size == 100
    other.write_bytes(b"y" * 500)
    assert pd.main() == 0


def test_make_demo_and_make_eval_use_the_domain_the_demo_set_trains_on(monkeypatch):
    """tools/demo_support.py's DEMO_* are the 128-pixel set's training data and flow shift; the held-out clips
    of make demo and make eval are drawn with them, and eval.py's retargeting pairs by default too."""
    from lab import eval_video as ev
    from tools import demo_support as ds

    s3 = load_config("stage3", "stage3_dit")
    assert (ds.DEMO_SIZE, ds.DEMO_FRAMES, ds.DEMO_SHIFT) == (s3.data.size, s3.data.frames, s3.shift)
    assert s3.data.options == {"thickness_scale": ds.DEMO_THICKNESS_SCALE, "min_contrast": ds.DEMO_MIN_CONTRAST}
    for data in (ds.demo_pairs("heldout", 1, ds.DEMO_SEED), ev.video_pairs(2)):
        assert (data.size, data.frames) == ((ds.DEMO_SIZE, ds.DEMO_SIZE), ds.DEMO_FRAMES)
        assert (data.thickness_scale, data.min_contrast) == (ds.DEMO_THICKNESS_SCALE, ds.DEMO_MIN_CONTRAST)
    spec = importlib.util.spec_from_file_location("eval_script", REPO / "lab" / "eval.py")
    ev_script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ev_script)
    monkeypatch.setattr("sys.argv", ["eval.py"])
    args = ev_script.parse_args()
    assert (args.size, args.thickness_scale, args.min_contrast) == (ds.DEMO_SIZE, ds.DEMO_THICKNESS_SCALE,
                                                                    ds.DEMO_MIN_CONTRAST)
    clips = ev_script.clips_entry(args)
    assert clips["min_contrast"] == clips["retarget"]["min_contrast"] == ds.DEMO_MIN_CONTRAST


def test_the_chain_grows_a_cache_built_for_fewer_clips(tmp_path, monkeypatch):
    td = train_demo()
    monkeypatch.setattr(td, "REPO", tmp_path)
    for step, folder in td.CACHE_STEPS.items():
        index, clips_needed = tmp_path / folder / "index.json", td.CACHES[folder][1]
        index.parent.mkdir(parents=True)
        for clips, complete, want in ((clips_needed // 2, True, False), (clips_needed, False, False),
                                      (clips_needed, True, True)):
            index.write_text(json.dumps({"clips": clips, "complete": complete}))
            assert td.done(step, f"{folder}/index.json") is want


def test_a_cache_no_phase_left_will_read_is_not_rebuilt(tmp_path, monkeypatch):
    """After --restore put a later phase's weights in place, the caches of the phases before it count as done."""
    td = train_demo()
    monkeypatch.setattr(td, "REPO", tmp_path)
    first, last = td.FIRST_CACHE, list(td.CACHES)[-1]
    assert len(td.CACHES) > 1  # the chain reads more than one cache
    readers = [n for n in td.STAGE3_CHAIN if td._STAGE3_CONFIGS[n]["data"].get("cache") == first]
    assert not td.done(td.cache_step(first), f"{first}/index.json")
    marker = tmp_path / outputs_path(f"runs/demo128/{readers[-1]}")
    marker.parent.mkdir(parents=True)
    marker.write_text("{}")
    assert td.done(td.cache_step(first), f"{first}/index.json")
    assert not td.done(td.cache_step(last), f"{last}/index.json")


def test_motion_guidance_adds_a_still_driver_branch_as_the_negative(monkeypatch):
    from lab import eval_video as ev
    from tools import demo

    plain = demo.demo_prompt()
    p = ev.still_negative(plain, 2.5)
    assert json.loads(demo.API_WORKFLOW.read_text()) == plain  # the workflow's prompt is not changed
    sampler = next(n["inputs"] for n in p.values() if n["class_type"] == "KSampler")
    assert sampler["cfg"] == 2.5 and sampler["negative"] != sampler["positive"]
    negative = p[sampler["negative"][0]]["inputs"]
    positive = p[sampler["positive"][0]]["inputs"]
    moved, still_expr = p[negative["retargeted_motion"][0]], p[negative["expression"][0]]
    driver = p[moved["inputs"]["motion_tokens"][0]]
    repeat = p[driver["inputs"]["frames"][0]]
    # the still driver: the identity image the positive branch retargets onto, repeated for the clip's frames
    assert repeat == {"class_type": "RepeatImageBatch",
                      "inputs": {"image": p[positive["retargeted_motion"][0]]["inputs"]["identity_image"],
                                 "amount": ev.ds.DEMO_FRAMES}}
    assert still_expr["inputs"]["frames"] == driver["inputs"]["frames"]
    assert {k: v for k, v in moved["inputs"].items() if k != "motion_tokens"} == \
        {k: v for k, v in p[positive["retargeted_motion"][0]]["inputs"].items() if k != "motion_tokens"}


def test_the_chain_stops_before_a_gpu_phase_on_the_cpu_and_runs_it_with_device_cuda(monkeypatch, capsys):
    td = train_demo()
    assert td.GPU_PHASES, "the chain has a GPU phase"
    gpu = td.GPU_PHASES[0]
    monkeypatch.setattr(td, "done", lambda name, marker: name != gpu)
    monkeypatch.setattr(td, "gate_passed", lambda: True)
    ran = []
    monkeypatch.setattr(td.subprocess, "run", lambda cmd, cwd: ran.append(cmd) or type("R", (), {"returncode": 0}))
    monkeypatch.setattr(sys, "argv", ["train_demo.py"])
    assert td.main() == 3 and not ran
    assert f"step {gpu} trains on live clips on a GPU" in capsys.readouterr().err
    monkeypatch.setattr(sys, "argv", ["train_demo.py", "--device", "cuda"])
    assert td.main() == 0
    assert len(ran) == 1 and ran[0][-4:] == ["--phase", gpu, "--set", "device=cuda"]


def test_the_gpu_training_script_parses_and_refuses_a_machine_without_cuda():
    import subprocess

    import torch

    script = REPO / "scripts" / "gpu_train.sh"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is visible: the script would train")
    done = subprocess.run(["bash", str(script), "configs/demo128.json:stage3_gpu1", "60"], capture_output=True,
                          text=True, env={**os.environ, "PYTHON": sys.executable})
    assert done.returncode == 2 and "no CUDA device visible" in done.stderr


TRIALS = [p["name"] for p in load_recipe(DEMO128)["phases"] if p.get("trial")]


@pytest.mark.parametrize("name", TRIALS)
def test_every_kept_trial_is_a_valid_continuation_of_a_chain_phase(name):
    """A trial (docs/training.md names each) is not run by the chain, so only this keeps it runnable: it must
    still validate and start from the exports of a phase the chain does run, in the demo set's domain."""
    trial = load_config("stage3", name)
    td = train_demo()
    assert name in td.TRIALS and name not in td.STAGE3_CHAIN
    chain = {c.output_dir: c for c in (load_config("stage3", n) for n in td.STAGE3_CHAIN)}
    parent = next((c for d, c in chain.items() if trial.dit.path == f"{d}/wan_dit.safetensors"), None)
    assert parent is not None, f"{name} starts from {trial.dit.path}, which no chain phase exports"
    assert trial.modules.path == f"{parent.output_dir}/im_animation_modules.safetensors"
    # the domain (sizes, body shapes, colours) is the parent's; a trial may draw the motion families in another mix
    domain = {k: v for k, v in trial.data.options.items() if k != "kind_weights"}
    assert (trial.tokenizer, trial.vae, trial.shift, trial.data.size, domain) == (
        parent.tokenizer, parent.vae, parent.shift, parent.data.size, parent.data.options)
    assert trial.output_dir not in chain  # its run never overwrites a phase of the demo set
