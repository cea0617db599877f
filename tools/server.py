"""Start the real ComfyUI server as a subprocess with this pack installed, and talk to it over HTTP."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

from .comfy_path import REPO, find_comfyui, without_comfyui_env

PACK_DIR_NAME = "comfyui-im-animation"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ComfyServer:
    """The real ComfyUI (``--cpu`` unless cpu=False, loopback, in-memory database) on a temporary base directory.

    base/models holds whatever the caller writes there; base/custom_nodes/<pack> links to this repo."""

    def __init__(self, base: Path | None = None, extra_args: list[str] | None = None, cpu: bool = True):
        self._tmp = None
        if base is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="ima-comfy-")
            base = Path(self._tmp.name)
        self.base = Path(base)
        for sub in ("models", "custom_nodes", "input", "output", "user", "temp"):
            (self.base / sub).mkdir(parents=True, exist_ok=True)
        link = self.base / "custom_nodes" / PACK_DIR_NAME
        if not link.exists():
            link.symlink_to(REPO, target_is_directory=True)
        self.comfyui = find_comfyui()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.extra_args = extra_args or []
        self.device_args = ["--cpu"] if cpu else []  # cpu=False: the host picks its GPU (scripts/gpu_check.sh)
        self.log_path = self.base / "server.log"
        self.proc: subprocess.Popen | None = None
        self.client_id = uuid.uuid4().hex

    @property
    def models(self) -> Path:
        return self.base / "models"

    def start(self, timeout: float = 180) -> ComfyServer:
        cmd = [sys.executable, str(self.comfyui / "main.py"), *self.device_args, "--listen", "127.0.0.1", "--port",
               str(self.port), "--base-directory", str(self.base), "--database-url", "sqlite:///:memory:",
               "--disable-auto-launch", "--preview-method", "none", *self.extra_args]
        env = dict(without_comfyui_env(os.environ), PYTHONUNBUFFERED="1")
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env, cwd=str(self.base))
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with {self.proc.returncode}:\n{self.log()[-4000:]}")
            try:
                self.get("/system_stats")
                return self
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.5)
        raise RuntimeError(f"ComfyUI did not answer within {timeout}s:\n{self.log()[-4000:]}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if getattr(self, "_log", None):
            self._log.close()
        if self._tmp:
            self._tmp.cleanup()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def get(self, path: str):
        with urllib.request.urlopen(self.url + path, timeout=60) as r:
            return json.loads(r.read())

    def post(self, path: str, payload: dict):
        req = urllib.request.Request(self.url + path, data=json.dumps(payload).encode(),
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return r.status, json.loads(r.read() or b"{}")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")

    def queue(self, prompt: dict) -> tuple[int, dict]:
        return self.post("/prompt", {"prompt": prompt, "client_id": self.client_id})

    def run(self, prompt: dict, timeout: float = 600) -> dict:
        """Queue an API-format prompt and wait for it. Returns its history entry (``status``, ``outputs``).
        Raises AssertionError when the server rejects the prompt at validation."""
        status, body = self.queue(prompt)
        assert status == 200, f"prompt rejected ({status}): {json.dumps(body, indent=1)[:4000]}"
        pid = body["prompt_id"]
        deadline = time.time() + timeout
        while time.time() < deadline:
            hist = self.get(f"/history/{pid}")
            if pid in hist and hist[pid].get("status", {}).get("completed") is not None:
                if hist[pid]["status"].get("status_str") in ("success", "error"):
                    return hist[pid]
            if self.proc.poll() is not None:
                raise RuntimeError(f"ComfyUI died while running a prompt:\n{self.log()[-4000:]}")
            time.sleep(0.25)
        raise TimeoutError(f"prompt {pid} did not finish in {timeout}s:\n{self.log()[-3000:]}")


def execution_error(entry: dict) -> dict | None:
    """The execution_error message of a history entry, or None when it succeeded."""
    for kind, data in entry.get("status", {}).get("messages", []):
        if kind == "execution_error":
            return data
    return None


def assert_ok(entry: dict) -> None:
    err = execution_error(entry)
    if err is not None:
        tb = "".join(err.get("traceback", []))
        raise AssertionError(f"{err['node_type']} failed: {err['exception_message']}\n{tb}")
