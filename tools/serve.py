"""make serve: the real ComfyUI (the default host) with this pack, the demo model set and the demo's inputs in
place, on a local port with the browser UI, until Ctrl-C.

Open the printed address to load the pack's workflows (Templates, or drag a file from workflows/), or queue a
workflow's API export through the HTTP API (README, "make serve"). The server's folder (models linked, inputs,
outputs, log) is out/serve/ unless --base says otherwise; it is kept between runs.

    python -m tools.serve [--port 8188] [--listen 127.0.0.1] [--base DIR] [--cpu]
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path

from . import demo_support as ds
from .comfy_path import REPO
from .demo import RANDOM_NOTE, install_models
from .demo_set import DEMO_NAMES
from .fixture_models import write_fixture_models
from .media import DRIVING_NAME, IDENTITY_NAME, LONG_DRIVING_NAME, LONG_FRAMES, write_video
from .server import ComfyServer

API_DEMO = "workflows/api/im_animation_demo.json"


def prepare(base: Path) -> tuple[ComfyServer, bool]:
    """A server (not started) in ``base`` with the demo models and inputs; False when the trained demo set is
    absent and random-weight fixtures stand in for it."""
    server = ComfyServer(base=base, cpu=False)
    trained = install_models(server.models)
    if not trained and not (server.models / "diffusion_models" / DEMO_NAMES["dit"]).exists():
        write_fixture_models(server.models, names=DEMO_NAMES)
    ds.write_pair_inputs(server.base / "input", ds.demo_pair(), IDENTITY_NAME, DRIVING_NAME)
    write_video(server.base / "input" / LONG_DRIVING_NAME, ds.long_demo_pair(LONG_FRAMES)["driving"], fps=24.0)
    return server, trained


def _interrupt(*_):
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--port", type=int, default=8188, help="port of the browser UI and the HTTP API")
    ap.add_argument("--listen", default="127.0.0.1",
                    help="address to listen on (the default serves this machine only)")
    ap.add_argument("--base", type=Path, default=REPO / "out" / "serve", help="the server's folder")
    ap.add_argument("--cpu", action="store_true", help="run on the CPU even where a GPU is present")
    args = ap.parse_args(argv)

    server, trained = prepare(args.base)
    server.port, server.url = args.port, f"http://127.0.0.1:{args.port}"
    if args.cpu:
        server.device_args = ["--cpu"]
    if args.listen != "127.0.0.1":
        server.extra_args = ["--listen", args.listen]  # the later --listen wins
    if not trained:
        print(RANDOM_NOTE)
    signal.signal(signal.SIGTERM, _interrupt)  # a service manager stops it like Ctrl-C
    try:
        server.start()
        print(f"ComfyUI with IM-Animation at {server.url}  (Ctrl-C stops it)\n"
              f"  folder: {server.base}  log: {server.log_path}\n"
              f"  queue the demo: curl -s -X POST {server.url}/prompt -H 'Content-Type: application/json' "
              f"-d \"{{\\\"prompt\\\": $(cat {API_DEMO})}}\"", flush=True)
        while server.proc.poll() is None:
            time.sleep(0.5)
        print(f"ComfyUI exited with {server.proc.returncode}; see {server.log_path}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
