"""One trainer per run directory: an advisory lock held for the life of the training process.

RUN_DIR/trainer.lock is opened and locked with flock(LOCK_EX) by the trainer (rank 0 under
torchrun) before it touches the run, and stays locked until the process exits. The kernel drops
the lock when the process dies, however it dies (kill -9, OOM), so a stale lock file of a dead
process is simply taken over by the next trainer. The file holds the holder's pid (for messages).

Anyone can ask whether a trainer holds the lock (`lock_holder`): it tries a shared, non-blocking
lock on its own descriptor and releases it at once. A trainer that meets such a probe retries for a
moment before concluding that another trainer holds the run.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - not reached on Linux/macOS
    fcntl = None  # type: ignore[assignment]

LOCK_FILE = "trainer.lock"
_RETRY_S = 2.0


class RunLocked(RuntimeError):
    """Another live process trains this run directory."""


class TrainerLock:
    """The held lock of one run directory (keep the object alive; `release` or process exit frees it)."""

    def __init__(self, run_dir: str | os.PathLike):
        self.path = Path(run_dir) / LOCK_FILE
        self._fh = None

    def acquire(self) -> "TrainerLock":
        fh = open(self.path, "a+")
        if fcntl is not None:
            deadline = time.monotonic() + _RETRY_S
            while True:
                try:
                    fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:  # not just a probe: a trainer holds it
                        holder = _read_pid(self.path)
                        fh.close()
                        raise RunLocked(
                            f"run directory {self.path.parent} is being trained by another process"
                            + (f" (pid {holder})" if holder else "")
                            + ": one trainer per run. Wait for it to finish, or cancel it "
                            "(python -m jobs cancel NAME, or kill that pid) before resuming."
                        ) from None
                    time.sleep(0.05)
        fh.seek(0)
        fh.truncate()
        fh.write(json.dumps({"pid": os.getpid(), "since": time.time()}) + "\n")
        fh.flush()
        self._fh = fh
        return self

    def release(self) -> None:
        if self._fh is not None:
            if fcntl is not None:
                fcntl.flock(self._fh.fileno(), fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None


def _read_pid(path: Path) -> int | None:
    try:
        pid = json.loads(path.read_text()).get("pid")
    except (OSError, ValueError, AttributeError):
        return None
    return pid if isinstance(pid, int) else None


def lock_holder(run_dir: str | os.PathLike) -> int | None:
    """The pid of the live trainer holding RUN_DIR's lock (0 if held but unreadable), or None if free."""
    path = Path(run_dir) / LOCK_FILE
    if fcntl is None or not path.is_file():
        return None
    try:
        fh = open(path, "r")
    except OSError:
        return None
    with fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_pid(path) or 0
        fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
    return None
