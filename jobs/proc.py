"""Process liveness with identity checks, so a recycled pid is never mistaken for a job.

On Linux the identity of a process is its start time (clock ticks since boot, from
/proc/<pid>/stat) together with the boot id; both are recorded in job.json at launch. The
processes of a multi-process job are found by a token in their environment (token_pids). Zombies
count as dead. Without /proc (other systems) only `os.kill(pid, 0)` is available.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass

_PROC = "/proc"
_DEAD_STATES = ("Z", "X", "x")
TOKEN_ENV = "LNFREE_JOB_TOKEN"


@dataclass(frozen=True)
class ProcInfo:
    """The fields of /proc/<pid>/stat the job runner needs."""

    state: str
    pgrp: int
    session: int
    start_ticks: int


def have_procfs() -> bool:
    """Whether /proc is available (Linux)."""
    return os.path.isdir(os.path.join(_PROC, "self"))


def proc_info(pid: int) -> ProcInfo | None:
    """Parse /proc/<pid>/stat; None if the process (or /proc) does not exist."""
    try:
        with open(os.path.join(_PROC, str(int(pid)), "stat"), "rb") as f:
            data = f.read().decode("ascii", "replace")
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may itself contain ')' or spaces.
    rest = data[data.rfind(")") + 2 :].split()
    try:
        return ProcInfo(state=rest[0], pgrp=int(rest[2]), session=int(rest[3]), start_ticks=int(rest[19]))
    except (IndexError, ValueError):
        return None


def boot_id() -> str | None:
    """This boot's id (changes on every reboot), or None where unavailable."""
    try:
        with open(os.path.join(_PROC, "sys", "kernel", "random", "boot_id"), encoding="ascii") as f:
            return f.read().strip() or None
    except OSError:
        return None


def identity(pid: int) -> dict[str, object]:
    """What to record at launch to recognise `pid` later: {"proc_start_ticks", "boot_id"}."""
    info = proc_info(pid)
    return {"proc_start_ticks": info.start_ticks if info else None, "boot_id": boot_id()}


def start_time(pid: int) -> float | None:
    """The unix time at which `pid` started, from /proc (None where unavailable)."""
    info = proc_info(pid)
    if info is None:
        return None
    try:
        with open(os.path.join(_PROC, "stat"), encoding="ascii") as f:
            btime = next(int(line.split()[1]) for line in f if line.startswith("btime "))
        return btime + info.start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, StopIteration, ValueError):
        return None


def pid_alive(
    pid: int | None,
    *,
    start_ticks: int | None = None,
    boot: str | None = None,
    started_before: float | None = None,
) -> bool:
    """Whether `pid` is a live (non-zombie) process that is still the one we mean.

    start_ticks/boot: the identity recorded at launch; a mismatch means the pid was reused.
    started_before: a unix time the process must have started before (for runs known only from
    status.json, whose "started" the trainer wrote after it started); 2 s slack for clock rounding.
    """
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except PermissionError:
        return False  # another user's process: jobs run as our user, so the pid was reused
    except OSError:
        return False
    if not have_procfs():
        return True
    info = proc_info(pid)
    if info is None or info.state in _DEAD_STATES:
        return False
    if boot is not None and boot_id() not in (None, boot):
        return False
    if start_ticks is not None and info.start_ticks != start_ticks:
        return False
    if started_before is not None:
        began = start_time(pid)
        if began is not None and began > started_before + 2.0:
            return False
    return True


def group_alive(pgid: int) -> bool:
    """Whether any live (non-zombie) process is left in process group `pgid`."""
    if not have_procfs():
        try:
            os.killpg(pgid, 0)
        except OSError:
            return False
        return True
    for entry in os.listdir(_PROC):
        if entry.isdigit():
            info = proc_info(int(entry))
            if info is not None and info.pgrp == pgid and info.state not in _DEAD_STATES:
                return True
    return False


def token_pids(token: str | None) -> list[int]:
    """Live (non-zombie) processes whose environment holds TOKEN_ENV=token (Linux; else []).

    jobs/ gives every launch a unique token in its environment; all descendants inherit it, also
    those that leave the job's process group (torch.distributed.run starts each worker in a
    session of its own) or outlive the launcher. A recycled pid never carries the token.
    """
    if not token or not have_procfs():
        return []
    needle = f"{TOKEN_ENV}={token}".encode()
    found = []
    for entry in os.listdir(_PROC):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(os.path.join(_PROC, entry, "environ"), "rb") as f:
                env = f.read()
        except OSError:
            continue  # gone, or another user's process
        if needle in env.split(b"\0"):
            info = proc_info(int(entry))
            if info is not None and info.state not in _DEAD_STATES:
                found.append(int(entry))
    return found


def signal_group(pgid: int, sig: int = signal.SIGTERM) -> bool:
    """Send `sig` to process group `pgid`; False if the group no longer exists."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    return True
