"""Cancelling and deleting runs.

cancel_run sends SIGTERM to the job's process group and its workers (the trainer checkpoints and
writes state "cancelled"), escalates to SIGKILL after a timeout, and records the cancellation
itself when the job could not (status.json is rewritten; metrics.jsonl is never touched).
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path
from typing import Any, Callable

from lnfree_core.rundir import last_launch, load_job, read_status, write_status
from lnfree_core.runlock import lock_holder

from .errors import RunActiveError, RunNotActiveError
from .proc import group_alive, pid_alive, signal_group, token_pids
from .runs import run_lock
from .status import RunStatus, job_token, run_status

_POLL_S = 0.05
_KILL_WAIT_S = 10.0
_AFTER_CHECKPOINT_S = 10.0  # after a checkpoint the trainer writes its final status and exits
CHECKPOINT_WAIT_S = 3600.0  # longest extra wait for a checkpoint in progress (GPT-2 XL: ~19 GB to write)


def _stopper(run_dir: Path, st: RunStatus) -> tuple[Callable[[int], bool], Callable[[], bool]]:
    """(send(sig), running()) for the run's processes: the launcher's process group plus, for
    multi-process jobs, every process carrying the launch's token; the bare pid for hand-started runs."""
    launch = last_launch(load_job(run_dir))
    pgid = launch.get("pgid") if launch else None
    token = job_token(launch)
    holder = lock_holder(run_dir)  # the trainer on the run, also one started by hand
    if isinstance(pgid, int) and pgid > 0:
        extra = [holder] if holder else []

        def send_all(sig: int) -> bool:
            sent = signal_group(pgid, sig)
            for pid in token_pids(token) + extra:
                try:
                    os.kill(pid, sig)
                    sent = True
                except ProcessLookupError:
                    pass
            return sent

        return send_all, (lambda: group_alive(pgid) or bool(token_pids(token)) or any(pid_alive(p) for p in extra))
    pid = holder or st.pid

    def send(sig: int) -> bool:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return False
        return True

    return send, (lambda: pid_alive(pid))


def _checkpointing(run_dir: Path | None) -> bool:
    """Whether the trainer says (status.json "checkpointing": true) that it is writing a checkpoint."""
    status = read_status(run_dir) if run_dir is not None else None
    return bool(status and status.get("checkpointing") is True)


def _wait_until_stopped(running: Callable[[], bool], timeout: float, run_dir: Path | None = None,
                        checkpoint_wait: float = 0.0) -> bool:
    """Wait up to `timeout` s for the processes to end; while the trainer reports a checkpoint in
    progress the wait extends (by up to `checkpoint_wait` s in all, and _AFTER_CHECKPOINT_S after it ends),
    so a cancel never kills a run in the middle of writing a checkpoint."""
    start = time.monotonic()
    deadline = start + timeout
    while running():
        now = time.monotonic()
        if run_dir is not None and now < start + timeout + checkpoint_wait and _checkpointing(run_dir):
            deadline = max(deadline, now + _AFTER_CHECKPOINT_S)
        if now >= deadline:
            return False
        time.sleep(_POLL_S)
    return True


def _unreported(run_dir: Path) -> dict[str, Any] | None:
    """status.json if the last launch never recorded an end (absent, older than the launch, or
    still "running"); None if the trainer wrote a final state itself."""
    status = read_status(run_dir)
    launch = last_launch(load_job(run_dir))
    if status is None:
        return {}
    launched = launch.get("started") if launch else None
    updated = status.get("updated")
    if isinstance(launched, (int, float)) and not (isinstance(updated, (int, float)) and updated >= launched):
        return status
    return status if status.get("state") == "running" else None


def cancel_run(run_dir: str | os.PathLike, timeout: float = 30.0,
               checkpoint_wait: float = CHECKPOINT_WAIT_S) -> RunStatus:
    """Stop a queued or running job; returns its status afterwards (normally "cancelled").

    SIGTERM first; SIGKILL after `timeout` s, except while the trainer reports a checkpoint in
    progress: then the wait extends (up to `checkpoint_wait` s more) until the checkpoint is written.
    Raises RunNotActiveError if its process is not alive.
    """
    rd = Path(os.path.abspath(run_dir))
    st = run_status(rd)
    if not st.alive:
        raise RunNotActiveError(f"run {st.name!r} is not running (state {st.state}); there is nothing to cancel")
    send, running = _stopper(rd, st)
    send(signal.SIGTERM)
    hard = not _wait_until_stopped(running, timeout, rd, checkpoint_wait)
    if hard:
        send(signal.SIGKILL)
        _wait_until_stopped(running, _KILL_WAIT_S)
    with run_lock(rd):
        old = _unreported(rd)
        if old is not None:
            how = (
                f"the job did not stop within {timeout:g} s of SIGTERM and was killed with SIGKILL"
                if hard
                else "the job stopped on SIGTERM without recording its cancellation"
            )
            write_status(
                rd, state="cancelled",
                step=old.get("step") if isinstance(old.get("step"), int) else st.step,
                max_steps=old.get("max_steps") if isinstance(old.get("max_steps"), int) else (st.max_steps or 0),
                pid=st.pid,
                reason=f"cancelled: {how}; work since the last checkpoint is lost; resume to continue from it",
                started=old.get("started") or st.started or time.time(),
            )
    return run_status(rd)


def delete_run(run_dir: str | os.PathLike) -> None:
    """Delete a run directory with everything in it; refused (RunActiveError) while the job is alive.

    Raises NotARunError for a directory that holds no run, so nothing else is ever deleted.
    """
    rd = Path(os.path.abspath(run_dir))
    st = run_status(rd)
    if st.alive:
        raise RunActiveError(f"run {st.name!r} is still {st.state} (pid {st.pid}); cancel it before deleting it")
    holder = lock_holder(rd)
    if holder is not None:  # a trainer started between the two checks
        raise RunActiveError(f"run {st.name!r} is being trained (pid {holder}); cancel it before deleting it")
    for attempt in range(5):  # the launcher's watcher may still rename its last job.json into place
        try:
            shutil.rmtree(rd)
            return
        except FileNotFoundError:  # a file listed by rmtree was renamed away meanwhile: list again
            if not rd.exists():
                return
            time.sleep(0.05 * (attempt + 1))
    shutil.rmtree(rd)
