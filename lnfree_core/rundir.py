"""The run directory: the one module that reads and writes its files (layout: docs/CONTRACTS.md).

    RUN_DIR/status.json     the trainer's state, rewritten atomically (RunLog.status; read_json)
    RUN_DIR/metrics.jsonl   one JSON object a line, appended by the trainer (RunLog.step/event) and
                            read incrementally, from the tail, or whole (read_metrics, last_step_row,
                            read_jsonl); merge_resumed drops the rows a resume superseded
    RUN_DIR/job.json        what jobs/ launched, a history of launches (load_job, write_job, last_launch)

Writing: a metrics line is flushed to the OS at once (readers see it), and fsynced only for events
(removals, checkpoints, failures) and at close: an fsync per step line would stall the training loop
on the disk. status.json is rewritten on every change of state and, while running, at most every
STATUS_EVERY_S. Reading: a line is only consumed once its newline is there, so a partially written
last line is left for the next read; complete lines that are not JSON objects (a fragment left by a
hard kill) are skipped.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

JOB_FILE = "job.json"
REQUEST_FILE = "request.yaml"
CONFIG_FILE = "config.yaml"
STATUS_FILE = "status.json"
METRICS_FILE = "metrics.jsonl"
LOG_FILE = "train.log"
CHECKPOINTS_DIR = "checkpoints"


def atomic_write_json(path: str | os.PathLike, data: dict[str, Any], *, fsync: bool = True) -> None:
    """Write `data` to `path` via a temporary file and rename, so readers never see half a file.

    fsync: make it durable before the rename (job.json, a cancel's status.json); the trainer's
    frequent status.json rewrites skip it (fsync=False) so the training loop never waits on the disk."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1)
            f.write("\n")
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)  # a full disk leaves no half-written temporary file behind
        raise


def read_json(path: str | os.PathLike) -> dict[str, Any] | None:
    """The JSON object in `path`, or None if the file is missing, unreadable or not an object."""
    try:
        with open(path, "rb") as f:
            data = json.loads(f.read())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


# -------------------------------------------------------------------------------------- status.json
def write_status(run_dir: str | os.PathLike, *, state: str, step: int, max_steps: int | None, pid: int | None,
                 reason: str | None, started: float, checkpointing: bool | None = None, fsync: bool = True) -> None:
    """Rewrite RUN_DIR/status.json atomically (fields: docs/CONTRACTS.md; `updated` is now).
    `checkpointing` is written only by the trainer while it runs (None: the key is left out)."""
    data = {"state": state, "step": step, "max_steps": max_steps, "pid": pid, "reason": reason,
            "updated": time.time(), "started": started}
    if checkpointing is not None:
        data["checkpointing"] = checkpointing
    atomic_write_json(Path(run_dir) / STATUS_FILE, data, fsync=fsync)


def read_status(run_dir: str | os.PathLike) -> dict[str, Any] | None:
    """RUN_DIR/status.json as a dict, or None if it is missing, unreadable or not a JSON object."""
    return read_json(Path(run_dir) / STATUS_FILE)


def _clean(v):
    """JSON has no NaN/inf: write them as strings so every line stays valid JSON."""
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    return v


STATUS_EVERY_S = 2.0


class RunLog:
    """Writer for one run directory (rank 0 only)."""

    def __init__(self, run_dir: str | Path, max_steps: int):
        self.dir = Path(run_dir)
        self.max_steps = max_steps
        self.started = time.time()
        self.repaired = ensure_trailing_newline(self.dir)
        self._metrics = open(self.dir / METRICS_FILE, "a", buffering=1)
        self._status_written = (None, 0.0, False)  # (state, time, checkpointing) of the last status.json write

    def status(self, state: str, step: int, reason: str | None = None, checkpointing: bool = False) -> None:
        """Write status.json; `checkpointing` tells a canceller that a checkpoint is being written.

        While running, a write that changes nothing but the step is skipped if the last one is under
        STATUS_EVERY_S old; a change of state, a reason, and the checkpointing flag (set or cleared) are
        always written."""
        last_state, last_time, last_ckpt = self._status_written
        now = time.time()
        if (state == "running" == last_state and reason is None and not checkpointing and not last_ckpt
                and now - last_time < STATUS_EVERY_S):
            return
        self._status_written = (state, now, checkpointing)
        write_status(self.dir, state=state, step=step, max_steps=self.max_steps, pid=os.getpid(), reason=reason,
                     started=self.started, checkpointing=checkpointing, fsync=False)

    def step(self, **fields) -> None:
        self._write({"type": "step", **fields, "time": time.time()}, durable=False)

    def event(self, kind: str, step: int, **fields) -> None:
        self._write({"type": "event", "kind": kind, "step": step, **fields, "time": time.time()}, durable=True)

    def _write(self, row: dict, durable: bool) -> None:
        self._metrics.write(json.dumps(_clean(row)) + "\n")
        self._metrics.flush()
        if durable:
            os.fsync(self._metrics.fileno())

    def close(self) -> None:
        self._metrics.flush()
        os.fsync(self._metrics.fileno())
        self._metrics.close()


# ---------------------------------------------------------------------------------- metrics.jsonl
_TAIL_CHUNK = 64 * 1024
_TAIL_MAX = 4 * 1024 * 1024


def ensure_trailing_newline(run_dir: str | os.PathLike) -> bool:
    """End metrics.jsonl with a newline when a killed writer left half a line (appends then start clean).

    The half line stays (the file is only appended to) and readers skip it as invalid JSON. Call it
    only while no one writes to the file (the trainer holds the run's lock; jobs/ holds its launch
    lock). True if it added one.
    """
    try:
        with open(Path(run_dir) / METRICS_FILE, "rb+") as fh:
            size = fh.seek(0, os.SEEK_END)
            if size == 0:
                return False
            fh.seek(size - 1)
            if fh.read(1) == b"\n":
                return False
            fh.write(b"\n")
            fh.flush()
            os.fsync(fh.fileno())
            return True
    except FileNotFoundError:
        return False


def _parse(line: bytes) -> dict[str, Any] | None:
    line = line.strip()
    if not line:
        return None
    try:
        row = json.loads(line)
    except ValueError:
        return None
    return row if isinstance(row, dict) else None


def _complete_rows(data: bytes) -> tuple[list[dict[str, Any]], int]:
    """The JSON-object rows of the complete lines of `data`, and the length of those lines in bytes."""
    end = data.rfind(b"\n")
    if end < 0:
        return [], 0
    return [row for line in data[: end + 1].split(b"\n") if (row := _parse(line)) is not None], end + 1


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """All complete lines of a JSONL file (a partly written last line is skipped)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return []
    return _complete_rows(data)[0]


def read_metrics(run_dir: str | os.PathLike, since_offset: int = 0) -> tuple[list[dict[str, Any]], int]:
    """Rows (dicts, steps and events) written since byte `since_offset`, and the offset to pass next.

    Start with 0 and pass the returned offset on the next call to get only new rows. If the file
    is shorter than `since_offset` (replaced or truncated), reading starts over from 0; the caller
    can tell by the returned offset being smaller than the one it passed. A missing file gives
    ([], 0).
    """
    since_offset = max(0, int(since_offset))
    try:
        f = open(Path(run_dir) / METRICS_FILE, "rb")
    except FileNotFoundError:
        return [], 0
    with f:
        if since_offset > os.fstat(f.fileno()).st_size:
            since_offset = 0
        f.seek(since_offset)
        data = f.read()
    rows, used = _complete_rows(data)
    return rows, since_offset + used


def last_step_row(run_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The last complete {"type": "step"} row of metrics.jsonl, read from the end of the file."""
    try:
        f = open(Path(run_dir) / METRICS_FILE, "rb")
    except FileNotFoundError:
        return None
    with f:
        size = os.fstat(f.fileno()).st_size
        want = _TAIL_CHUNK
        while True:
            start = max(0, size - want)
            f.seek(start)
            data = f.read(size - start)
            lines = data[: data.rfind(b"\n") + 1].split(b"\n")
            if start > 0:
                lines = lines[1:]  # the first line may be cut
            for line in reversed(lines):
                row = _parse(line)
                if row is not None and row.get("type") == "step":
                    return row
            if start == 0 or want >= _TAIL_MAX:
                return None
            want *= 4


def merge_resumed(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The run's effective history: rows superseded by a resume are dropped.

    A {"type": "event", "kind": "resumed", "step": s} row means training restarted from the
    checkpoint at step s, so rows written before it with a step above s (work lost with the
    crashed process, redone after the resume) are removed. The resumed event itself is kept.
    """
    out: list[dict[str, Any]] = []
    for row in rows:
        if row.get("type") == "event" and row.get("kind") == "resumed" and isinstance(row.get("step"), int):
            cut = row["step"]
            out = [r for r in out if not (isinstance(r.get("step"), int) and r["step"] > cut)]
        out.append(row)
    return out


# ---------------------------------------------------------------------------------------- job.json
# Top-level keys follow docs/CONTRACTS.md and describe the latest launch: command, pid, pgid, nproc,
# started, name (and token). Extra keys: python, trainer, extra_args (to relaunch the same way on
# resume) and history, a list of launches, each {command, pid, pgid, nproc, started, resume, token,
# proc_start_ticks, boot_id} plus returncode once the launching process has seen the job exit
# (token: the launch's LNFREE_JOB_TOKEN environment value, see jobs.proc.token_pids).
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
