"""The run directory's live files: status.json (atomic) and metrics.jsonl (append + flush per line).

A metrics line is flushed to the OS at once (readers see it), and fsynced only for events (removals,
checkpoints, failures) and at close: an fsync per step line would stall the training loop on the disk.
status.json is rewritten on every change of state and, while running, at most every STATUS_EVERY_S.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path


def atomic_write_json(path: str | Path, data: dict) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(data, indent=1))
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)  # a full disk leaves no half-written temporary file behind
        raise


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
        self.repaired = repair_metrics_tail(self.dir / "metrics.jsonl")
        self._metrics = open(self.dir / "metrics.jsonl", "a", buffering=1)
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
        atomic_write_json(self.dir / "status.json", {
            "state": state, "step": step, "max_steps": self.max_steps, "pid": os.getpid(),
            "reason": reason, "updated": time.time(), "started": self.started, "checkpointing": checkpointing,
        })

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


def repair_metrics_tail(path: str | Path) -> bool:
    """End a JSONL file with a newline when a killed writer left half a line (appends then start clean).

    The half line stays (the file is only appended to) and readers skip it as invalid JSON. Call it
    only while no one writes to the file (the trainer holds the run's lock). True if it added one.
    """
    try:
        with open(path, "rb+") as fh:
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


def read_jsonl(path: str | Path) -> list[dict]:
    """All complete lines of a JSONL file (a partly written last line is skipped)."""
    rows = []
    path = Path(path)
    if not path.exists():
        return rows
    with open(path) as fh:
        for line in fh:
            if not line.endswith("\n"):
                break
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows
