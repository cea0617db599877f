"""lab.bench.profile_stage3 at tiny size on the CPU: the loader, the in-memory step and the profiler table are
measured from the trainer's own code, and the report says which of the two bounds training."""

import json

import pytest

from im_animation_core.train.presets import tiny_config_dict, write_tiny_vae
from lab.bench import profile_stage3

pytestmark = pytest.mark.usefixtures("one_thread")


def test_profile_reports_the_loader_the_step_and_the_operators(tmp_path, capsys):
    vae = write_tiny_vae(tmp_path / "vae.safetensors")
    config = tmp_path / "stage3.json"
    config.write_text(json.dumps(tiny_config_dict("stage3", tmp_path / "unused", vae_path=vae, dit_draws=2)))
    out = tmp_path / "profile.json"
    report = profile_stage3.main(["--config", str(config), "--set", "batch_size=1", "--loader-batches", "3",
                                  "--steps", "2", "--profile-steps", "1", "--json", str(out)])
    assert report["device"] == "cpu" and report["batch_size"] == 1 and report["sets"] == ["batch_size=1"]
    assert report["loader_s_per_batch"] > 0 and report["step_s"] > 0 and report["wall_s_per_step"] > 0
    assert report["bound_by"] == ("clips" if report["loader_s_per_batch"] > report["step_s"] else "step")
    assert "kernels_per_step" not in report  # CUDA only
    written = json.loads(out.read_text())
    assert "aten::" in written["table"] and written["step_s"] == report["step_s"]
    assert not (tmp_path / "unused").exists()  # nothing saved where the config points
    assert '"bound_by"' in capsys.readouterr().out
