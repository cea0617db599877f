"""The evaluation report names the ComfyUI host its video rows ran in (docs/results.md's figures differ a little
between hosts: Load Video decodes differently in v0.33)."""

import sys

from tools.comfy_path import REPO

sys.path.insert(0, str(REPO / "scripts"))
import eval_support as es  # noqa: E402


def test_the_report_names_the_host_version_and_folder(tmp_path, monkeypatch):
    (tmp_path / "comfy").mkdir()
    (tmp_path / "main.py").write_text("")
    (tmp_path / "comfyui_version.py").write_text('__version__ = "0.33.0"\n')
    monkeypatch.setenv("COMFYUI_PATH", str(tmp_path))
    assert es.comfyui_host() == f"v0.33.0 ({tmp_path.resolve()})"
