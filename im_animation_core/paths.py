"""Confining user-given file paths to a set of allowed folders.

A server started with ``--listen`` takes paths from anyone who can reach it. A path is accepted only when,
after resolving symlinks and ``..``, it names a regular file inside one of the allowed folders. Everything
else (outside, missing, a folder, unreadable) gets the same message, so the answer cannot be used to probe
which files exist elsewhere on the machine.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from .errors import InputError

# Longest path accepted; longer ones cannot name a real file and would only reach the OS as errors.
MAX_PATH_CHARS = 4096


def _real(path: str) -> str:
    return os.path.normcase(os.path.realpath(path))


def is_inside(path: str, folder: str) -> bool:
    """Whether resolved ``path`` lies in resolved ``folder`` (both already absolute and real)."""
    try:
        return os.path.commonpath([path, folder]) == folder
    except ValueError:  # different drives on Windows
        return False


def shown_name(real: str, folders: Iterable[tuple[str, str]]) -> str:
    """How a message names the file at ``real`` (a path confine() returned): relative to the first of
    ``folders`` ((folder, label) pairs) that holds it, followed by its label, so that errors never show the
    server's own folder layout; the file name alone when none holds it."""
    for folder, label in folders:
        if folder:
            root = _real(folder)
            if is_inside(real, root):
                return os.path.relpath(real, root).replace(os.sep, "/") + label
    return os.path.basename(real)


def refused(what: str, given: str, allowed_names: str) -> InputError:
    """The one message for every path that is refused or cannot be read."""
    shown = given if len(given) <= 200 else given[:200] + "..."
    return InputError(f"{what} '{shown}' is not a readable file in the allowed folders ({allowed_names}). "
                      f"Put the file in one of them and give its path relative to that folder, or allow "
                      f"its folder as described in docs/security.md.")


def confine(given: str, base: str, allowed: Iterable[str], what: str, allowed_names: str) -> str:
    """The real path of the regular file that ``given`` names, when it lies inside one of ``allowed``.

    given: the user's path, absolute or relative to ``base``. allowed: folders (need not exist).
    what / allowed_names: words for the message ("Video file", "ComfyUI's input, output and temp folders").
    Returns the resolved path (open that one, not ``given``). Raises InputError with one message for every
    refusal: outside the folders, missing, a folder, unreadable, or a malformed path.
    """
    if not isinstance(given, str) or not given or "\x00" in given or len(given) > MAX_PATH_CHARS:
        raise refused(what, repr(given) if not isinstance(given, str) else given.replace("\x00", "\\0"),
                      allowed_names)
    try:
        real = _real(given if os.path.isabs(given) else os.path.join(base, given))
        roots = [_real(folder) for folder in allowed if folder]
        if not any(is_inside(real, root) for root in roots):
            raise refused(what, given, allowed_names)
        if not os.path.isfile(real) or not os.access(real, os.R_OK):
            raise refused(what, given, allowed_names)
    except (OSError, ValueError) as exc:
        if isinstance(exc, InputError):
            raise
        raise refused(what, given, allowed_names) from None
    return real
