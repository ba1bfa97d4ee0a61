"""Reading metrics.jsonl: incremental offsets, partial and corrupt lines, the tail, resumes merged."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent.parent)]

from jobs import merge_resumed, read_metrics  # noqa: E402
from lnfree_core.rundir import ensure_trailing_newline, last_step_row  # noqa: E402


def _line(**row) -> bytes:
    return (json.dumps(row) + "\n").encode()


def _step(n: int) -> bytes:
    return _line(type="step", step=n, loss=1.0 / n)


def test_missing_file_gives_nothing(tmp_path):
    assert read_metrics(tmp_path) == ([], 0)
    assert last_step_row(tmp_path) is None


def test_incremental_reads_return_only_new_complete_rows(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_bytes(_step(1) + _step(2))
    rows, off = read_metrics(tmp_path)
    assert [r["step"] for r in rows] == [1, 2] and off == path.stat().st_size
    assert read_metrics(tmp_path, off) == ([], off)
    partial = _step(3)
    with open(path, "ab") as f:
        f.write(partial[:7])  # a line being written
    rows, off2 = read_metrics(tmp_path, off)
    assert rows == [] and off2 == off  # not consumed until complete
    with open(path, "ab") as f:
        f.write(partial[7:] + _line(type="event", kind="checkpoint", step=3, message="m"))
    rows, off3 = read_metrics(tmp_path, off2)
    assert [(r["type"], r["step"]) for r in rows] == [("step", 3), ("event", 3)]
    assert off3 == path.stat().st_size


def test_corrupt_and_non_object_lines_are_skipped(tmp_path):
    (tmp_path / "metrics.jsonl").write_bytes(_step(1) + b'{"type": "st\n' + b"[1, 2]\n\n\xff\xfe\n" + _step(2))
    rows, _ = read_metrics(tmp_path)
    assert [r["step"] for r in rows] == [1, 2]


def test_shrunk_file_starts_over(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_bytes(_step(1) + _step(2) + _step(3))
    _, off = read_metrics(tmp_path)
    path.write_bytes(_step(1))
    rows, new = read_metrics(tmp_path, off)
    assert [r["step"] for r in rows] == [1] and new < off


def test_last_step_row_skips_trailing_events_and_partial_line(tmp_path):
    body = b"".join(_step(n) for n in range(1, 5001)) + _line(type="event", kind="checkpoint", step=5000, message="")
    (tmp_path / "metrics.jsonl").write_bytes(body + b'{"type": "step", "st')
    assert last_step_row(tmp_path)["step"] == 5000


def test_last_step_row_searches_beyond_the_first_chunk(tmp_path):
    events = b"".join(_line(type="event", kind="grad_spike", step=1, message="x" * 200) for _ in range(2000))
    (tmp_path / "metrics.jsonl").write_bytes(_step(1) + events)  # ~450 kB of events after the step
    assert last_step_row(tmp_path)["step"] == 1


def test_merge_resumed_drops_work_redone_after_a_resume():
    rows = [{"type": "step", "step": s} for s in range(1, 8)]
    rows += [{"type": "event", "kind": "removal", "step": 7}]
    rows += [{"type": "event", "kind": "resumed", "step": 5}]
    rows += [{"type": "step", "step": s} for s in range(6, 10)]
    merged = merge_resumed(rows)
    assert [r["step"] for r in merged if r["type"] == "step"] == list(range(1, 10))
    assert [r.get("kind") for r in merged if r["type"] == "event"] == ["resumed"]


def test_merge_resumed_from_scratch():
    rows = [{"type": "step", "step": 1}, {"type": "step", "step": 2}, {"type": "event", "kind": "resumed", "step": 0},
            {"type": "step", "step": 1}]
    assert [r["step"] for r in merge_resumed(rows)] == [0, 1]


def test_trailing_newline_is_added_only_when_missing(tmp_path):
    path = tmp_path / "metrics.jsonl"
    assert ensure_trailing_newline(tmp_path) is False  # no file
    path.write_bytes(_step(1) + b'{"type": "st')
    assert ensure_trailing_newline(tmp_path) is True
    assert ensure_trailing_newline(tmp_path) is False
    with open(path, "ab") as f:
        f.write(_step(2))
    assert [r["step"] for r in read_metrics(tmp_path)[0]] == [1, 2]
