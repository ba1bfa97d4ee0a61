"""How many CPU threads the demo build uses.

PyTorch's CPU kernels run on an OpenMP team of threads that wait for each other at every
operation. On idle cores, two threads train the demo models faster than one; on cores busy with
other work, a descheduled team member stalls the others and two threads were ~2.5x *slower* than
one (measured on the 2-core development machine under a load average of 8). So the build uses as
many threads as there are idle cores when it starts (at least one); an explicit number always
wins. Idle cores are measured over half a second from ``/proc/stat`` (Linux), else estimated from
the 1-minute load average (which lags: it still counts work that has just ended). The choice is
made once per build and recorded in its summary.
"""

from __future__ import annotations

import contextlib
import os
import time

import torch

SAMPLE_S = 0.5


def _cpu_times() -> tuple[float, float] | None:
    """(idle, total) jiffies of all CPUs from /proc/stat, or None where there is no /proc/stat."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            fields = [float(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    if len(fields) < 4:
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)  # idle + iowait
    return idle, sum(fields[:8])  # guest time is already counted in user time


def idle_cores(sample_s: float = SAMPLE_S) -> float:
    """How many cores were idle: measured over ``sample_s`` seconds, else from the load average."""
    cores = os.cpu_count() or 1
    first = _cpu_times()
    if first is not None:
        time.sleep(sample_s)
        second = _cpu_times()
        if second is not None and second[1] > first[1]:
            return cores * (second[0] - first[0]) / (second[1] - first[1])
    try:
        return max(0.0, cores - os.getloadavg()[0])
    except OSError:  # no load average on this platform
        return float(cores)


def choose_threads(requested: int | None = None) -> int:
    """``requested`` if given, else the number of idle cores, rounded (at least 1, at most all cores)."""
    if requested is not None:
        if requested < 1:
            raise ValueError(f"threads must be >= 1, got {requested}")
        return requested
    cores = os.cpu_count() or 1
    return max(1, min(cores, int(idle_cores() + 0.5)))


@contextlib.contextmanager
def torch_threads(n: int):
    """Run the block with ``torch.set_num_threads(n)``, restoring the previous setting afterwards."""
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield n
    finally:
        torch.set_num_threads(previous)
