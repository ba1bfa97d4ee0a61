"""Liveness checks: dead pids, zombies and recycled pids are not mistaken for a job."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path[:0] = [str(Path(__file__).resolve().parent.parent)]

from jobs import run_status  # noqa: E402
from jobs.proc import group_alive, have_procfs, identity, pid_alive  # noqa: E402

needs_proc = pytest.mark.skipif(not have_procfs(), reason="needs /proc (Linux)")


@pytest.fixture
def sleeper():
    """A live process in its own process group."""
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    yield p
    p.kill()
    p.wait()


def test_live_process_with_matching_identity_is_alive(sleeper):
    ident = identity(sleeper.pid)
    assert pid_alive(sleeper.pid, start_ticks=ident["proc_start_ticks"], boot=ident["boot_id"])
    assert group_alive(sleeper.pid)


@needs_proc
def test_recycled_pid_is_not_the_job(sleeper):
    ticks = identity(sleeper.pid)["proc_start_ticks"]
    assert not pid_alive(sleeper.pid, start_ticks=ticks + 1)
    assert not pid_alive(sleeper.pid, start_ticks=ticks, boot="another-boot")


@needs_proc
def test_process_started_after_the_run_is_not_the_run(sleeper):
    assert not pid_alive(sleeper.pid, started_before=time.time() - 3600)
    assert pid_alive(sleeper.pid, started_before=time.time())


def test_dead_and_invalid_pids():
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    assert not pid_alive(p.pid)
    for pid in (None, 0, -1, True, "12"):
        assert not pid_alive(pid)


@needs_proc
def test_zombie_counts_as_dead():
    p = subprocess.Popen([sys.executable, "-c", "pass"], start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while pid_alive(p.pid):  # exits, but stays a zombie until reaped
            assert time.monotonic() < deadline
            time.sleep(0.02)
        import os

        os.kill(p.pid, 0)  # the zombie still exists: only the /proc state tells it apart
        assert not group_alive(p.pid)
    finally:
        p.wait()


@needs_proc
def test_job_json_with_a_recycled_pid_reads_as_dead(tmp_path, sleeper):
    ident = identity(sleeper.pid)
    launch = {"command": ["x"], "pid": sleeper.pid, "pgid": sleeper.pid, "nproc": 1, "started": time.time(),
              "proc_start_ticks": ident["proc_start_ticks"] - 1, "boot_id": ident["boot_id"]}
    (tmp_path / "job.json").write_text(json.dumps({**launch, "name": "r", "history": [launch]}))
    (tmp_path / "status.json").write_text(json.dumps(
        {"state": "running", "step": 3, "max_steps": 9, "pid": sleeper.pid, "reason": None,
         "updated": time.time() + 1, "started": time.time()}))
    s = run_status(tmp_path)
    assert (s.state, s.alive) == ("failed", False)
    launch["proc_start_ticks"] += 1
    (tmp_path / "job.json").write_text(json.dumps({**launch, "name": "r", "history": [launch]}))
    s = run_status(tmp_path)
    assert (s.state, s.alive, s.step) == ("running", True, 3)


@needs_proc
def test_hand_started_run_is_known_from_status_json(tmp_path, sleeper):
    """No job.json: the pid in status.json counts only if it started before the run did."""
    status = {"state": "running", "step": 1, "max_steps": 9, "pid": sleeper.pid, "reason": None,
              "updated": time.time(), "started": time.time()}
    (tmp_path / "status.json").write_text(json.dumps(status))
    assert run_status(tmp_path).state == "running"
    status["started"] = status["updated"] = time.time() - 3600  # the pid was recycled since
    (tmp_path / "status.json").write_text(json.dumps(status))
    s = run_status(tmp_path)
    assert s.state == "failed" and "died without reporting" in s.reason
