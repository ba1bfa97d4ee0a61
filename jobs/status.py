"""The state of a run, derived only from its directory and the process table.

Nothing is kept in memory, so the answer is the same after an app restart, and a job that died
without reporting (kill -9, OOM killer, power loss) is recognised as failed.
"""

from __future__ import annotations

import os
import signal
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from .errors import JobError, NotARunError
from lnfree_core.rundir import LOG_FILE, REQUEST_FILE, last_launch, last_step_row, load_job, read_status
from lnfree_core.runlock import lock_holder

from .proc import pid_alive, token_pids
from .runs import validate_name

STATES = ("queued", "starting", "running", "finished", "failed", "cancelled")
ACTIVE_STATES = ("queued", "starting", "running")
# Files that make a folder a run even before status.json exists (a trainer that died in start-up).
RUN_MARKERS = ("config.yaml", "metrics.jsonl", "checkpoints", "trainer.lock")
_MAX_TIME = 4102444800.0  # 2100-01-01: a later "time" in status.json is garbage
DIED_REASON = (
    "the process died without reporting (killed?); see train.log; resume to continue from the last checkpoint"
)


@dataclass
class RunStatus:
    """Where a run stands. `state` is one of STATES; `alive` says whether its process still runs."""

    name: str
    run_dir: str
    state: str
    step: int
    max_steps: int | None
    reason: str | None
    last_metrics: dict[str, Any] | None
    alive: bool
    pid: int | None
    started: float | None
    updated: float | None
    nproc: int
    launches: int
    returncode: int | None

    @property
    def active(self) -> bool:
        """True while the run is queued or running, or its process has not exited yet."""
        return self.alive or self.state in ACTIVE_STATES

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict of all fields."""
        return asdict(self)


def describe_exit(returncode: int | None) -> str:
    """A short human description of a process exit code ('' if unknown)."""
    if returncode is None:
        return ""
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    meaning = {0: "success", 1: "failed", 2: "bad configuration or usage", 130: "SIGINT", 143: "SIGTERM"}
    return f"exit code {returncode}" + (f", {meaning[returncode]}" if returncode in meaning else "")


def log_tail(run_dir: str | os.PathLike, max_bytes: int = 4096) -> str:
    """The last non-empty line of train.log ('' if none)."""
    try:
        with open(Path(run_dir) / LOG_FILE, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - max_bytes))
            lines = f.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return ""
    return next((line.strip() for line in reversed(lines) if line.strip()), "")


def _requested_max_steps(run_dir: Path) -> int | None:
    """max_steps asked for in request.yaml (top level or under "overrides"), if any."""
    try:
        with open(run_dir / REQUEST_FILE, encoding="utf-8") as f:
            request = yaml.safe_load(f) or {}
        overrides = request.get("overrides") or {}
        value = request.get("max_steps", overrides.get("max_steps") if isinstance(overrides, dict) else None)
    except (OSError, yaml.YAMLError, AttributeError):
        return None
    return _int_or_none(value)


def _int_or_none(value: Any) -> int | None:
    ok = isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**53
    return value if ok else None


def _time_or_none(value: Any) -> float | None:
    """A unix time from a file, or None when it is not a plausible one (negative, NaN, 1e300, ...)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= _MAX_TIME:
        return float(value)
    return None


def job_token(launch: dict[str, Any] | None) -> str | None:
    """The token to look a launch's workers up by: only multi-process jobs need the (slower) scan."""
    if not launch or (_int_or_none(launch.get("nproc")) or 1) <= 1:
        return None
    token = launch.get("token")
    return token if isinstance(token, str) and token else None


def _is_alive(launch: dict[str, Any] | None, status: dict[str, Any] | None,
              run_dir: Path | None = None) -> tuple[bool, int | None]:
    """(alive, pid) of the job: any trainer holding the run's lock (also one started by hand on a run
    jobs/ launched), else the launch recorded by jobs/, else the pid in status.json."""
    holder = lock_holder(run_dir) if run_dir is not None else None
    if holder is not None:
        return True, holder or (_int_or_none(status.get("pid")) if status else None)
    if launch is not None:
        pid = _int_or_none(launch.get("pid"))
        if pid_alive(pid, start_ticks=launch.get("proc_start_ticks"), boot=launch.get("boot_id")):
            return True, pid
        # Workers of a multi-process job may outlive their launcher (they run in sessions of their own).
        return bool(job_token(launch) and token_pids(job_token(launch))), pid
    pid = _int_or_none(status.get("pid")) if status else None
    when = (_time_or_none(status.get("started")) or _time_or_none(status.get("updated"))) if status else None
    return pid_alive(pid, started_before=when), pid


def run_status(run_dir: str | os.PathLike) -> RunStatus:
    """The status of the run in `run_dir` (raises NotARunError if it holds no run)."""
    rd = Path(os.path.abspath(run_dir))
    job = load_job(rd)
    status = read_status(rd)
    if job is None and status is None and not any((rd / m).exists() for m in RUN_MARKERS):
        raise NotARunError(f"{rd} is not a run directory (it has neither job.json nor status.json)")
    launch = last_launch(job)
    alive, pid = _is_alive(launch, status, rd)
    returncode = _int_or_none(launch.get("returncode")) if launch else None
    updated = _time_or_none(status.get("updated")) if status else None
    launched = launch.get("started") if launch else None
    # A status.json older than the latest launch belongs to an earlier launch (before a resume).
    stale = status is not None and isinstance(launched, (int, float)) and (updated or 0.0) < launched
    reason = status.get("reason") if status else None
    if status is None or stale:
        if alive:
            state, reason = "queued", None
        elif job is None:
            state = "failed"
            reason = ("the trainer stopped during start-up, before it wrote status.json; `python -m lnfree_core "
                      "train --out RUN_DIR --resume` starts it again, or delete the folder")
        else:
            state = "failed"
            how = describe_exit(returncode)
            last = log_tail(rd)
            reason = (
                "the process exited before reporting its status"
                + (f" ({how})" if how else "")
                + "; see train.log"
                + (f": {last}" if last else "")
            )
    elif status.get("state") in ("running", "starting"):
        state, reason = (status["state"], None) if alive else ("failed", DIED_REASON)
    elif status.get("state") in ("finished", "failed", "cancelled"):
        state = status["state"]
    else:
        state, reason = "failed", f"status.json has an unknown state {status.get('state')!r}"
    max_steps = _int_or_none(status.get("max_steps")) if status else None
    first = job["history"][0] if job and job.get("history") else {}
    started = _time_or_none(first.get("started") if job else (status or {}).get("started"))
    return RunStatus(
        name=str(job.get("name") or rd.name) if job else rd.name,
        run_dir=str(rd),
        state=state,
        step=(_int_or_none(status.get("step")) or 0) if status else 0,
        max_steps=max_steps if max_steps is not None else _requested_max_steps(rd),
        reason=reason if isinstance(reason, str) or reason is None else str(reason),
        last_metrics=last_step_row(rd),
        alive=alive,
        pid=pid,
        started=started,
        updated=updated,
        nproc=_int_or_none(launch.get("nproc")) or 1 if launch else 1,
        launches=len(job["history"]) if job else 0,
        returncode=returncode,
    )


def list_runs(root: str | os.PathLike) -> list[RunStatus]:
    """Statuses of all runs under the runs root `root`, newest first (an absent root gives [])."""
    if os.path.exists(root) and not os.path.isdir(root):
        raise JobError(f"runs root {root} is a file, not a folder: pass the folder that holds the runs")
    try:
        entries = list(os.scandir(root))
    except FileNotFoundError:
        return []
    out = []
    for entry in entries:
        try:
            validate_name(entry.name)
            if entry.is_dir():
                out.append(run_status(entry.path))
        except (NotARunError, ValueError, OSError):
            continue
    out.sort(key=lambda s: (s.started or 0.0, s.name), reverse=True)
    return out
