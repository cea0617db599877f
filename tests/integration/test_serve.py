"""make serve (tools/serve.py): the real ComfyUI with this pack, the demo models and inputs; the demo's API export
queued through POST /prompt runs and saves its video; Ctrl-C (SIGINT) or SIGTERM stops it."""

import json
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

from tools.comfy_path import REPO, comfyui_env
from tools.server import free_port


def get(url: str):
    with urllib.request.urlopen(url, timeout=30) as r:
        return json.loads(r.read())


def test_serve_runs_the_demo_through_the_api_and_stops(tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, "-m", "tools.serve", "--port", str(port), "--base", str(tmp_path),
                             "--cpu"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=dict(comfyui_env(), PYTHONUNBUFFERED="1"))
    try:
        deadline = time.time() + 180
        while True:
            assert proc.poll() is None, proc.stdout.read()
            try:
                get(url + "/system_stats")
                break
            except OSError:
                assert time.time() < deadline, "make serve did not answer"
                time.sleep(0.5)
        assert (tmp_path / "input" / "ima_demo_identity.png").is_file()
        # the README's curl example: {"prompt": <workflows/api/im_animation_demo.json>}
        body = json.dumps({"prompt": json.loads((REPO / "workflows/api/im_animation_demo.json").read_text())})
        req = urllib.request.Request(url + "/prompt", data=body.encode(), headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as r:
            pid = json.loads(r.read())["prompt_id"]
        deadline = time.time() + 600
        while pid not in (hist := get(f"{url}/history/{pid}")) or hist[pid]["status"].get("completed") is None:
            assert time.time() < deadline and proc.poll() is None, "the demo did not finish"
            time.sleep(0.5)
        assert hist[pid]["status"]["status_str"] == "success", hist[pid]["status"]
        assert list((tmp_path / "output" / "video").glob("im_animation*.mp4"))
    finally:
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert f"at {url}" in out and "curl" in out
    with pytest.raises(OSError):
        get(url + "/system_stats")
