"""RUN_DIR/job.json: what jobs/ launched, kept as a history of launches.

Top-level keys follow docs/CONTRACTS.md and describe the latest launch: command, pid, pgid, nproc,
started, name (and token). Extra keys: python, trainer, extra_args (to relaunch the same way on resume) and
history, a list of launches, each {command, pid, pgid, nproc, started, resume, token,
proc_start_ticks, boot_id} plus returncode once the launching process has seen the job exit
(token: the launch's LNFREE_JOB_TOKEN environment value, see jobs.proc.token_pids).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .runs import JOB_FILE, atomic_write_json, read_json, run_lock

_CONTRACT_KEYS = ("command", "pid", "pgid", "nproc", "started")
_TOP_LEVEL = (*_CONTRACT_KEYS, "token")


def load_job(run_dir: str | os.PathLike) -> dict[str, Any] | None:
    """job.json as a dict with a non-empty "history" list, or None if absent or unreadable."""
    job = read_json(Path(run_dir) / JOB_FILE)
    if job is None:
        return None
    history = job.get("history")
    if not isinstance(history, list) or not history or not all(isinstance(h, dict) for h in history):
        # Written by something else (or an older jobs/): treat the top level as the only launch.
        job["history"] = [{k: job.get(k) for k in _CONTRACT_KEYS}]
    return job


def last_launch(job: dict[str, Any] | None) -> dict[str, Any] | None:
    """The most recent launch recorded in a loaded job.json, or None."""
    return job["history"][-1] if job else None


def write_job(run_dir: str | os.PathLike, job: dict[str, Any]) -> None:
    """Write job.json atomically, copying the latest launch's fields to the top level."""
    latest = job["history"][-1]
    atomic_write_json(Path(run_dir) / JOB_FILE, {**job, **{k: latest.get(k) for k in _TOP_LEVEL}})


def record_exit(run_dir: str | os.PathLike, index: int, pid: int, returncode: int) -> None:
    """Store the exit code of launch number `index` (if it is still the launch with `pid`)."""
    with run_lock(run_dir):
        job = load_job(run_dir)
        if job is None or index >= len(job["history"]) or job["history"][index].get("pid") != pid:
            return
        job["history"][index]["returncode"] = returncode
        write_job(run_dir, job)
