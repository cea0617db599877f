"""im_animation_core.train.outputs: the record a finished training run leaves, on run folders made here."""

import json

import pytest

from im_animation_core.train.outputs import (
    OUTPUTS_NAME,
    outputs_path,
    read_run_outputs,
    run_file,
    run_finished,
    write_run_outputs,
)


def test_a_run_is_finished_once_its_outputs_are_written_and_reads_back(tmp_path):
    run = tmp_path / "stage2"
    run.mkdir()
    assert not run_finished(run) and not run_finished(tmp_path / "missing")
    files = {"modules": "im_animation_modules.safetensors", "motion_tokenizer": "motion_tokenizer.safetensors"}
    write_run_outputs(run, "stage2", 1500, files)
    assert run_finished(run) and run_finished(str(run))
    assert outputs_path(run) == run / OUTPUTS_NAME == run / "outputs.json"
    assert read_run_outputs(run) == {"stage": "stage2", "step": 1500, "files": files}
    # the file format the trainer has always written, so runs made before keep reading
    assert (run / "outputs.json").read_text(encoding="utf-8") == json.dumps(
        {"stage": "stage2", "step": 1500, "files": files}, indent=2)


def test_run_file_is_a_path_in_the_run_and_names_what_is_missing(tmp_path):
    write_run_outputs(tmp_path, "stage3", 7, {"dit": "wan_dit.safetensors"})
    assert run_file(tmp_path, "dit") == tmp_path / "wan_dit.safetensors"
    assert run_file(str(tmp_path), "dit") == tmp_path / "wan_dit.safetensors"
    with pytest.raises(KeyError, match=r"no 'modules' \(it has: dit\)"):
        run_file(tmp_path, "modules")
