"""The ablation rows of lab/eval.py say what each variant was trained for, read from its runs, so that rows
of different budgets never pass for a like-for-like comparison."""

import json

from im_animation_core.train.outputs import write_run_outputs
from lab import eval_support as es


def _run(variant, seed, step, batch, done=True):
    run = variant / f"seed{seed}"
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"batch_size": batch, "steps": step}))
    if done:
        write_run_outputs(run, "stage2", step, {})


def test_a_variant_whose_seeds_share_a_budget_names_it_once(tmp_path):
    for seed in (0, 1, 2):
        _run(tmp_path / "full", seed, 1500, 8)
    assert es.training_budget(tmp_path / "full") == "1500 steps of batch 8"


def test_seeds_of_different_budgets_are_all_listed_and_unfinished_runs_ignored(tmp_path):
    _run(tmp_path / "full", 0, 200, 4)
    _run(tmp_path / "full", 10, 1500, 8)
    _run(tmp_path / "full", 2, 1500, 8)
    _run(tmp_path / "full", 3, 900, 2, done=False)  # still training: no outputs.json
    assert es.training_budget(tmp_path / "full") == "200 steps of batch 4 / 1500 steps of batch 8"
