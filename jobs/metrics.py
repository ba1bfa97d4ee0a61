"""Reading RUN_DIR/metrics.jsonl: incrementally, from the tail, and with resumes merged.

The trainer appends one JSON object a line. A line is only consumed once its newline is there, so
a partially written last line is left for the next read; complete lines that are not valid JSON
objects (e.g. a fragment left by a hard kill) are skipped.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .runs import METRICS_FILE

_TAIL_CHUNK = 64 * 1024
_TAIL_MAX = 4 * 1024 * 1024


def _parse(line: bytes) -> dict[str, Any] | None:
    line = line.strip()
    if not line:
        return None
    try:
        row = json.loads(line)
    except ValueError:
        return None
    return row if isinstance(row, dict) else None


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
    end = data.rfind(b"\n")
    if end < 0:
        return [], since_offset
    rows = [row for line in data[: end + 1].split(b"\n") if (row := _parse(line)) is not None]
    return rows, since_offset + end + 1


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


def ensure_trailing_newline(run_dir: str | os.PathLike) -> bool:
    """End metrics.jsonl with a newline if a dead job left half a line (so appends start clean).

    Only call this while no job writes to the run. Returns True if a newline was added.
    """
    path = Path(run_dir) / METRICS_FILE
    try:
        with open(path, "rb+") as f:
            size = f.seek(0, os.SEEK_END)
            if size == 0:
                return False
            f.seek(size - 1)
            if f.read(1) == b"\n":
                return False
            f.write(b"\n")
            return True
    except FileNotFoundError:
        return False
