"""Run names, run-directory paths and the launch lock of the job runner.

A run lives in ROOT/NAME (see docs/CONTRACTS.md for the files inside; lnfree_core.rundir reads and
writes them). The runs root is always
passed in explicitly; nothing here depends on the current directory except relative paths the
caller gives.
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path
from typing import Any, Iterator

from .errors import InvalidRunName

LOCK_FILE = ".jobs.lock"  # jobs/ serialises launches and job.json updates on it

try:  # POSIX only; on other systems the lock below is a no-op.
    import fcntl
except ImportError:  # pragma: no cover - not reached on Linux
    fcntl = None  # type: ignore[assignment]

MAX_NAME_LEN = 100
_NAME_RE = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")


def validate_name(name: object) -> str:
    """Return `name` if it is a valid run name, else raise InvalidRunName saying what is wrong.

    Allowed: letters, digits, '-', '_', '.'; no leading dot; 1 to 100 characters. Since '/' and a
    leading '.' are refused, a name can never point outside the runs root.
    """
    if not isinstance(name, str) or not name:
        raise InvalidRunName("a run name must be a non-empty string")
    if len(name) > MAX_NAME_LEN:
        raise InvalidRunName(f"run name is {len(name)} characters long; at most {MAX_NAME_LEN} are allowed")
    if name.startswith("."):
        raise InvalidRunName(f"run name {name!r} must not start with a dot")
    if not _NAME_RE.fullmatch(name):
        bad = sorted({c for c in name if not (c.isascii() and (c.isalnum() or c in "._-"))})
        raise InvalidRunName(
            f"run name {name!r} contains {''.join(bad)!r}; use only letters, digits, '-', '_' and '.'"
        )
    return name


def run_dir_for(root: str | os.PathLike, name: str) -> Path:
    """The absolute directory of run `name` under the runs root `root` (the name is validated)."""
    validate_name(name)
    return Path(os.path.abspath(root)) / name


def resolve_run_dir(root_or_run_dir: str | os.PathLike, name: str | None = None) -> Path:
    """`root_or_run_dir / name` when a name is given, else `root_or_run_dir` itself (absolute)."""
    if name is not None:
        return run_dir_for(root_or_run_dir, name)
    return Path(os.path.abspath(root_or_run_dir))


@contextlib.contextmanager
def run_lock(run_dir: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive lock on the run directory (serialises launches and job.json updates)."""
    with open(Path(run_dir) / LOCK_FILE, "a+b") as f:
        if fcntl is not None:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)
