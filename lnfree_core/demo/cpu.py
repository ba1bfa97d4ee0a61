"""How many CPU threads the demo build uses.

PyTorch's CPU kernels run on an OpenMP team of threads that wait for each other at every
operation. On idle cores, two threads train the demo models ~1.7x faster than one; on cores busy
with other work, a descheduled team member stalls the others and two threads are ~2.5x *slower*
than one (measured on the 2-core development machine under a load average of 8). So the build
uses all cores when the machine is idle when it starts, and one thread otherwise; an explicit
number always wins. The choice is made once per build and recorded in its summary.
"""

from __future__ import annotations

import contextlib
import os

import torch


def choose_threads(requested: int | None = None) -> int:
    """``requested`` if given, else the cores left idle by the 1-minute load average (at least 1)."""
    if requested is not None:
        if requested < 1:
            raise ValueError(f"threads must be >= 1, got {requested}")
        return requested
    cores = os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except OSError:  # not available on this platform
        return cores
    return max(1, min(cores, int(cores - load + 0.5)))


@contextlib.contextmanager
def torch_threads(n: int):
    """Run the block with ``torch.set_num_threads(n)``, restoring the previous setting afterwards."""
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield n
    finally:
        torch.set_num_threads(previous)
