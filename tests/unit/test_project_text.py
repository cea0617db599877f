"""The project's files speak of the project alone: no tracker numbers, no talk of hardware on loan, and no
absolute path of the machine a file was written on. Scans every file git tracks (or would track) that is text,
and names each offending file:line."""

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# Each pattern is written so that this file does not match itself (a bracket or group inside the words).
WORDS = re.compile(
    r"\bissues?[ ]?#?\d+\b"  # a tracker's numbered entry
    r"|\bwork[ ]items?\b"
    r"|\ble[n]t\b"  # hardware on loan
    r"|\bdevice[ ]time\b"
    r"|\b(?:this|that|the|a|each|every|another|one|its|our|my|helper|work)[ ](?:sess[i]on|ta[s]k)s?\b",
    re.IGNORECASE)
MACHINE_PATH = re.compile(r"(?<![\w.~/-])/(?:work|tmp|root|home)/")

# Lines that must hold such text, with why: {(file, a substring of the line)}.
ALLOWED = {
    ("tests/integration/test_bad_inputs.py", '"/' + 'tmp/escape"'),  # an absolute path is the bad input under test
}
# Files exempt from the scan while they are rewritten (none now).
NOT_YET_CLEAN: tuple[str, ...] = ()


def project_files() -> list[Path]:
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=REPO,
                            capture_output=True, check=True).stdout.decode().split("\0")
    return [REPO / name for name in listed if name and name not in NOT_YET_CLEAN and (REPO / name).is_file()]


def text_of(path: Path) -> str | None:
    data = path.read_bytes()
    if b"\0" in data[:8192]:
        return None  # weights, images, videos
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def offending_lines(text: str, rel: str) -> list[str]:
    found = []
    for number, line in enumerate(text.splitlines(), start=1):
        match = WORDS.search(line) or MACHINE_PATH.search(line)
        if match and not any(rel == f and s in line for f, s in ALLOWED):
            found.append(f"{rel}:{number}: {match.group(0)!r} in {line.strip()[:120]}")
    return found


def test_the_scan_catches_what_it_is_for():
    bad = ["See iss" + "ue 24.", "one GPU was " + "le" + "nt to us", "15 minutes of device " + "time",
           "done in this " + "session", "the " + "task asked for it", "written to /" + "work/main/runs/x"]
    assert all(offending_lines(line, "x.md") for line in bad)
    ordinary = ["the heatmap task", 'pytest.fixture(scope="session")', "the child's session", "equivalent",
                "runs/demo128/stage1", "a/tmp/b", "~/home/x", "issues with the VAE"]
    assert not any(offending_lines(line, "x.md") for line in ordinary)


def test_no_project_file_speaks_of_work_items_borrowed_machines_or_machine_paths():
    found = []
    for path in project_files():
        text = text_of(path)
        if text is not None:
            found += offending_lines(text, path.relative_to(REPO).as_posix())
    assert not found, "reword these lines (or make the path repo-relative):\n" + "\n".join(found)


SEARCH_PATH_EDIT = re.compile(r"\bsys\.path\b")
# The one place that may order the module search path: the suite puts ComfyUI ahead of this repository.
SEARCH_PATH_ALLOWED = ("tests/conftest.py",)


def test_no_python_file_edits_the_module_search_path():
    """The lab, the tools and the scripts are packages run with python -m; a process that imports ComfyUI gets
    the host first from its environment (tools/comfy_path.py), never from an edit of the search path."""
    found = []
    for path in project_files():
        rel = path.relative_to(REPO).as_posix()
        if path.suffix == ".py" and rel not in SEARCH_PATH_ALLOWED and rel != "tests/unit/test_project_text.py":
            text = text_of(path) or ""
            found += [f"{rel}:{n}" for n, line in enumerate(text.splitlines(), 1) if SEARCH_PATH_EDIT.search(line)]
    assert not found, "use the environment (tools/comfy_path.py: comfyui_env) instead:\n" + "\n".join(found)
