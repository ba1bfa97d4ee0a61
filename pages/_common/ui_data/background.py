"""Long commands run detached from the page that started them (BackgroundCommand), and reading their
logs: the tail of a text file and the last progress it shows.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path


def tail_lines(path: str | os.PathLike, n: int = 40, max_bytes: int = 64 * 1024) -> str:
    """The last `n` lines of a text file (reads at most `max_bytes` from its end); '' if absent.

    Carriage-return progress bars are reduced to their last state per line.
    """
    try:
        with open(path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(max(0, size - max_bytes))
            data = f.read()
    except OSError:
        return ""
    lines = data.decode("utf-8", "replace").split("\n")
    if size > max_bytes:
        lines = lines[1:]  # the first line may be cut
    lines = [ln.rsplit("\r", 1)[-1] if "\r" in ln.rstrip("\r") else ln.rstrip("\r") for ln in lines]
    while lines and not lines[-1].strip():
        lines.pop()
    return "\n".join(lines[-n:])


_PROGRESS_RE = re.compile(r"(?:\[|\b)(\d+)\s*/\s*(\d+)(?:\]|\b)|(\d{1,3}(?:\.\d+)?)\s*%")


def parse_progress(text: str) -> float | None:
    """The progress a command's output shows last ('[3/10]', '3/10', '42%'), as a fraction; None if none."""
    for line in reversed(text.splitlines()):
        matches = list(_PROGRESS_RE.finditer(line))
        for m in reversed(matches):
            if m.group(1) is not None:
                done, total = int(m.group(1)), int(m.group(2))
                if total > 0 and done <= total:
                    return done / total
            elif m.group(3) is not None:
                pct = float(m.group(3))
                if 0 <= pct <= 100:
                    return pct / 100
    return None


class BackgroundCommand:
    """One long command (e.g. building the demo suite) run detached from the page that started it.

    Output goes to `log_path`; the process object lives as long as this object (keep one per
    process, at module level), so any page rerun or another browser tab can watch it.
    """

    def __init__(self, log_path: str | os.PathLike):
        self.log_path = Path(log_path)
        self._proc: subprocess.Popen | None = None
        self._lock = threading.Lock()
        self.command: list[str] | None = None
        self.started: float | None = None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self._proc is None else self._proc.poll()

    def start(self, command: Sequence[str], cwd: str | os.PathLike | None = None) -> None:
        """Start `command` (RuntimeError if one is still running)."""
        with self._lock:
            if self.running:
                raise RuntimeError("already running")
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            root = str(Path(__file__).resolve().parents[2])  # the repository root
            env = dict(os.environ, PYTHONUNBUFFERED="1")
            env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
            with open(self.log_path, "wb") as log:
                self._proc = subprocess.Popen(list(command), stdout=log, stderr=subprocess.STDOUT,
                                              stdin=subprocess.DEVNULL, cwd=cwd, env=env, start_new_session=True)
            self.command, self.started = list(command), time.time()

    def tail(self, n: int = 20) -> str:
        return tail_lines(self.log_path, n) if self._proc is not None else ""

    def progress(self) -> float | None:
        return parse_progress(self.tail(5))

    def wait(self, timeout: float | None = None) -> int | None:
        return None if self._proc is None else self._proc.wait(timeout)

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM the command's process group (SIGKILL after `timeout` s); its exit code."""
        if not self.running:
            return self.returncode
        try:
            os.killpg(self._proc.pid, signal.SIGTERM)
            return self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self._proc.pid, signal.SIGKILL)
            return self._proc.wait()
        except ProcessLookupError:
            return self._proc.wait()


def python_command(*args: str) -> list[str]:
    """`python -m lnfree_core ARGS` with this interpreter."""
    return [sys.executable, "-m", "lnfree_core", *args]
