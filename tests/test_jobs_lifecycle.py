"""Start, watch, cancel, crash, resume and delete runs against a fake trainer (docs/CONTRACTS.md)."""

from __future__ import annotations

import json
import os
import random
import signal
import sys
import time
from pathlib import Path

import pytest

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parent.parent)]
import test_jobs_support as S  # noqa: E402

from jobs import (  # noqa: E402
    DIED_REASON, NotARunError, RunActiveError, RunFinishedError, RunNotActiveError, cancel_run, delete_run,
    list_runs, merge_resumed, read_metrics, resume_run, run_status, start_run,
)

fake, root = S.fake, S.root


def test_start_runs_to_finished(root, fake):
    h = start_run(root, "ok", {"max_steps": 6, "checkpoint_every": 3}, trainer=fake)
    st = h.wait(15)
    assert (st.state, st.step, st.max_steps, st.reason, st.alive) == ("finished", 6, 6, None, False)
    assert st.last_metrics["step"] == 6 and st.last_metrics["loss"] == pytest.approx(10 / 6)
    assert [r["step"] for r in S.step_rows(h.run_dir)] == [1, 2, 3, 4, 5, 6]
    assert S.checkpoint_steps(h.run_dir) == [3, 6]
    job = json.loads((h.run_dir / "job.json").read_text())
    assert {k: job[k] for k in ("name", "pid", "pgid", "nproc")} == {"name": "ok", "pid": h.pid, "pgid": h.pid,
                                                                      "nproc": 1}
    assert job["command"] == h.command and h.command[-4:] == ["--config", str(h.run_dir / "request.yaml"), "--out",
                                                               str(h.run_dir)]
    assert abs(job["started"] - time.time()) < 60
    log = (h.run_dir / "train.log").read_text()
    assert "=== jobs: start" in log and "fake trainer: finished" in log
    S.wait_for(lambda: run_status(h.run_dir).returncode == 0, what="exit code recorded")


def test_job_runs_in_its_own_session(root, fake):
    h = start_run(root, "own", {"max_steps": 200, "step_time": 0.02}, trainer=fake)
    try:
        assert os.getpgid(h.pid) == h.pid != os.getpgid(0)
        assert os.getsid(h.pid) == h.pid
    finally:
        cancel_run(h.run_dir, timeout=10)


def test_queued_until_the_trainer_reports(root, fake):
    h = start_run(root, "slow", {"max_steps": 3, "startup_delay": 0.8}, trainer=fake)
    st = run_status(h.run_dir)
    assert (st.state, st.alive, st.step) == ("queued", True, 0)
    S.wait_for(lambda: run_status(h.run_dir).state == "running", what="running")
    assert h.wait(15).state == "finished"


def test_trainer_failure_keeps_its_reason(root, fake):
    h = start_run(root, "bad", {"max_steps": 9, "fail_at": 4}, trainer=fake)
    assert h.wait(15).state == "failed"
    st = S.wait_for(lambda: (s := run_status(h.run_dir)).returncode is not None and s)
    assert st.reason == "loss became NaN at step 4" and st.returncode == 1 and st.step == 3


def test_exit_before_reporting_is_failed_with_log_line(root, fake):
    h = start_run(root, "cfg", {"bad_config": True}, trainer=fake)
    h.wait(15)
    st = S.wait_for(lambda: (s := run_status(h.run_dir)).returncode is not None and s)
    assert st.state == "failed"
    assert "exit code 2, bad configuration or usage" in st.reason
    assert "error: bad config (fake trainer)" in st.reason


def test_graceful_cancel_then_resume(root, fake):
    h = start_run(root, "c", {"max_steps": 40, "step_time": 0.02, "checkpoint_every": 100}, trainer=fake)
    S.wait_steps(h.run_dir, 3)
    st = cancel_run(h.run_dir, timeout=10)
    assert (st.state, st.reason, st.alive) == ("cancelled", "cancelled by SIGTERM", False)
    assert S.checkpoint_steps(h.run_dir) == [st.step]  # the trainer checkpointed on SIGTERM
    assert h.process.wait(5) == 143
    with pytest.raises(RunNotActiveError):
        cancel_run(h.run_dir)
    h2 = resume_run(root, "c")
    assert "--resume" in h2.command and h2.pid != h.pid
    assert h2.wait(20).state == "finished"
    assert [r["step"] for r in S.step_rows(h.run_dir)] == list(range(1, 41))  # nothing lost or repeated
    job = json.loads((h.run_dir / "job.json").read_text())
    assert [x["resume"] for x in job["history"]] == [False, True]
    assert job["history"][0]["pid"] == h.pid and job["pid"] == h2.pid
    assert (h.run_dir / "train.log").read_text().count("=== jobs:") == 2


def test_cancel_escalates_to_sigkill_and_records_cancelled(root, fake):
    h = start_run(root, "stubborn", {"max_steps": 500, "step_time": 0.02, "ignore_sigterm": True}, trainer=fake)
    S.wait_steps(h.run_dir, 4)
    t0 = time.monotonic()
    st = cancel_run(h.run_dir, timeout=0.5)
    assert 0.5 <= time.monotonic() - t0 < 8
    assert st.state == "cancelled" and not st.alive and "SIGKILL" in st.reason
    assert h.process.wait(5) == -signal.SIGKILL
    rows = S.step_rows(h.run_dir)
    assert [r["step"] for r in rows] == list(range(1, len(rows) + 1)) and len(rows) >= 4  # metrics intact
    status = json.loads((h.run_dir / "status.json").read_text())
    assert status["step"] >= 4 and status["max_steps"] == 500 and status["state"] == "cancelled"
    assert run_status(h.run_dir).state == "cancelled"  # stays so (not "died without reporting")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kill_9_at_any_moment_then_resume_loses_and_repeats_nothing(root, fake, seed):
    rnd = random.Random(seed)
    cfg = {"max_steps": 24, "step_time": 0.015, "checkpoint_every": 5}
    h = start_run(root, f"k{seed}", cfg, trainer=fake)
    S.wait_steps(h.run_dir, rnd.randint(2, 16))
    time.sleep(rnd.uniform(0, 0.03))  # anywhere inside a step, a checkpoint or a status write
    os.killpg(h.pgid, signal.SIGKILL)
    h.process.wait(5)

    st = run_status(h.run_dir)
    assert (st.state, st.reason, st.alive) == ("failed", DIED_REASON, False)
    assert S.fresh_status(h.run_dir)["reason"] == DIED_REASON  # the same seen from a new process
    before = (h.run_dir / "metrics.jsonl").read_bytes()
    killed_at = [r["step"] for r in S.step_rows(h.run_dir)]
    assert killed_at == list(range(1, len(killed_at) + 1))
    ckpt = max(S.checkpoint_steps(h.run_dir), default=0)
    assert ckpt <= killed_at[-1] < ckpt + 5 + 1

    h2 = resume_run(h.run_dir)
    assert h2.wait(20).state == "finished"
    after = (h.run_dir / "metrics.jsonl").read_bytes()
    assert after.startswith(before)  # what was written before the kill is untouched
    raw = [r["step"] for r in S.step_rows(h.run_dir)]
    assert raw == killed_at + list(range(ckpt + 1, 25))  # resumed right after the newest checkpoint
    merged = [r["step"] for r in merge_resumed(read_metrics(h.run_dir)[0]) if r["type"] == "step"]
    assert merged == list(range(1, 25))
    assert S.fresh_status(h.run_dir)["state"] == "finished"


def test_resume_after_a_half_written_metrics_line(root, fake):
    h = start_run(root, "half", {"max_steps": 8, "checkpoint_every": 4, "fail_at": 6}, trainer=fake)
    h.wait(15)
    with open(h.run_dir / "metrics.jsonl", "ab") as f:
        f.write(b'{"type": "step", "st')  # a line cut by a hard kill
    h2 = resume_run(root, "half")
    assert h2.wait(15).state == "failed"  # fail_at fires again at step 6
    rows = read_metrics(h.run_dir)[0]
    resumed = [r for r in rows if r.get("kind") == "resumed"]
    assert len(resumed) == 1 and resumed[0]["step"] == 4  # the event after the fragment was not lost


def test_resume_is_refused_while_alive_or_finished(root, fake):
    h = start_run(root, "busy", {"max_steps": 200, "step_time": 0.02}, trainer=fake)
    with pytest.raises(RunActiveError, match="busy"):
        resume_run(root, "busy")
    with pytest.raises(RunActiveError):
        delete_run(h.run_dir)
    cancel_run(h.run_dir, timeout=10)
    done = start_run(root, "done", {"max_steps": 2}, trainer=fake)
    done.wait(15)
    with pytest.raises(RunFinishedError, match="finished"):
        resume_run(done.run_dir)
    with pytest.raises(NotARunError):
        resume_run(root, "nonexistent")


def test_delete(root, fake, tmp_path):
    h = start_run(root, "gone", {"max_steps": 2}, trainer=fake)
    h.wait(15)
    delete_run(h.run_dir)
    assert not h.run_dir.exists()
    other = tmp_path / "not-a-run"
    other.mkdir()
    (other / "data.txt").write_text("keep")
    with pytest.raises(NotARunError):
        delete_run(other)
    assert (other / "data.txt").read_text() == "keep"


def test_state_is_rebuilt_from_disk_by_a_new_process(root, fake):
    fin = start_run(root, "fin", {"max_steps": 2}, trainer=fake)
    fin.wait(15)
    live = start_run(root, "live", {"max_steps": 300, "step_time": 0.02}, trainer=fake)
    S.wait_steps(live.run_dir, 2)
    for h in (fin, live):
        mine, theirs = run_status(h.run_dir).to_dict(), S.fresh_status(h.run_dir)
        for key in ("name", "state", "alive", "pid", "max_steps", "reason", "started", "launches"):
            assert theirs[key] == mine[key], key
    assert S.fresh_status(live.run_dir)["state"] == "running"
    cancel_run(live.run_dir, timeout=10)
    assert S.fresh_status(live.run_dir)["state"] == "cancelled"


def test_list_runs_newest_first(root, fake):
    assert list_runs(root) == []
    for name in ("first", "second", "third"):
        start_run(root, name, {"max_steps": 1}, trainer=fake).wait(15)
        time.sleep(0.01)
    (root / "stray-dir").mkdir()
    (root / ".hidden").mkdir()
    (root / "file.txt").write_text("x")
    runs = list_runs(root)
    assert [r.name for r in runs] == ["third", "second", "first"]
    assert {r.state for r in runs} == {"finished"}


def test_status_of_an_earlier_launch_does_not_hide_a_resume(root, fake):
    """After resume, the old status.json (failed/cancelled) is stale until the new process reports."""
    import yaml

    h = start_run(root, "again", {"max_steps": 8, "checkpoint_every": 2, "fail_at": 5}, trainer=fake)
    assert h.wait(15).state == "failed"
    request = h.run_dir / "request.yaml"
    request.write_text(yaml.safe_dump({"max_steps": 8, "checkpoint_every": 2, "startup_delay": 0.8}))
    h2 = resume_run(h.run_dir)
    st = run_status(h.run_dir)
    assert (st.state, st.alive, st.reason) == ("queued", True, None)
    assert h2.wait(15).state == "finished"
    # A resume that dies before it reports must not show the earlier launch's state either.
    h3 = start_run(root, "again2", {"max_steps": 100, "step_time": 0.02}, trainer=fake)
    S.wait_steps(h3.run_dir, 2)
    assert cancel_run(h3.run_dir, timeout=10).state == "cancelled"
    (h3.run_dir / "request.yaml").write_text(yaml.safe_dump({"bad_config": True}))
    resume_run(h3.run_dir).wait(15)
    st = run_status(h3.run_dir)
    assert st.state == "failed" and "exited before reporting" in st.reason


def test_multi_process_job_under_torchrun(root, fake):
    """Workers run in sessions of their own and may outlive the launcher: the token still finds them."""
    pytest.importorskip("torch.distributed.run")
    from jobs.proc import group_alive, token_pids

    cfg = {"max_steps": 400, "step_time": 0.02, "checkpoint_every": 1000, "ignore_sigterm": True}
    h = start_run(root, "ddp", cfg, nproc=2, trainer=fake)
    assert h.command[1:7] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", fake[0]]
    S.wait_steps(h.run_dir, 2, timeout=60)
    token = json.loads((h.run_dir / "job.json").read_text())["token"]
    worker = json.loads((h.run_dir / "status.json").read_text())["pid"]
    assert worker != h.pid and worker in token_pids(token) and len(token_pids(token)) == 3  # launcher + 2 ranks
    os.kill(h.pid, signal.SIGKILL)  # the launcher dies (e.g. OOM killer); its workers carry on
    h.process.wait(5)
    n = len(S.step_rows(h.run_dir))
    S.wait_steps(h.run_dir, n + 2)
    st = run_status(h.run_dir)
    assert (st.state, st.alive, st.nproc) == ("running", True, 2)
    with pytest.raises(RunActiveError):
        resume_run(h.run_dir)  # two trainers must never share a run directory
    st = cancel_run(h.run_dir, timeout=0.5)  # the workers ignore SIGTERM: SIGKILL must reach them
    assert st.state == "cancelled" and "SIGKILL" in st.reason and not st.alive
    assert not token_pids(token) and not group_alive(h.pgid)
