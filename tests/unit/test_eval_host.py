"""The evaluation report names the ComfyUI host its video rows ran in (docs/results.md's figures differ a little
between hosts: Load Video decodes differently in v0.33)."""

import os

from lab import eval_support as es


def test_the_report_names_the_host_version_and_folder(tmp_path, monkeypatch):
    (tmp_path / "comfy").mkdir()
    (tmp_path / "main.py").write_text("")
    (tmp_path / "comfyui_version.py").write_text('__version__ = "0.33.0"\n')
    monkeypatch.setenv("COMFYUI_PATH", str(tmp_path))
    # relative to the repository, so that a committed report names no machine's folders
    assert es.comfyui_host() == f"v0.33.0 ({os.path.relpath(tmp_path.resolve(), es.REPO)})"
