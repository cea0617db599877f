"""Two gloo CPU processes under torchrun running a test's worker script (the DDP and FSDP tests)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# Appended to every worker, whose body is a main() function: main's locals (the trainers and the modules that
# hold the process group) are freed while the interpreter is whole, the reference cycles too, and the process
# then leaves without the interpreter's teardown, where gloo's worker threads can abort a process whose work is
# done ("terminate called without an active exception"; it failed these tests once).
_EXIT = """

import gc as _gc
import os as _os
import sys as _sys

main()
_gc.collect()
_sys.stdout.flush()
_sys.stderr.flush()
_os._exit(0)
"""


def run_two_ranks(worker: str, folder: Path, args: list[str]) -> subprocess.CompletedProcess:
    """Write ``worker`` (a script defining main()) to folder/worker.py and run it in two processes with ``args``;
    one torch thread each. A generous limit: two processes on a busy 2-core machine are slow, not hung."""
    (folder / "worker.py").write_text(worker + _EXIT)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1", "--nproc_per_node", "2",
           str(folder / "worker.py"), *args]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)})
