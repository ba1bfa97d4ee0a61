"""Cancel and resume buttons of the Train and Runs pages drive jobs/ (with a stand-in trainer)."""

from __future__ import annotations

import time

import pytest

import test_app_support as S  # tests/ is on sys.path (pytest rootdir conftest)

# Follows docs/CONTRACTS.md: status.json, metrics.jsonl; SIGTERM -> "cancelled", exit 143; --resume continues.
TRAINER = r'''
import argparse, json, os, signal, sys, time
from pathlib import Path
p = argparse.ArgumentParser()
p.add_argument("cmd"); p.add_argument("--config"); p.add_argument("--out"); p.add_argument("--resume", action="store_true")
a = p.parse_args()
out = Path(a.out)
stop = []
signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
def status(state, step):
    tmp = out / ".s.tmp"
    tmp.write_text(json.dumps({"state": state, "step": step, "max_steps": 1000, "pid": os.getpid(), "reason": None,
                               "updated": time.time(), "started": time.time()}))
    os.replace(tmp, out / "status.json")
m = open(out / "metrics.jsonl", "a")
if a.resume:
    m.write(json.dumps({"type": "event", "kind": "resumed", "step": 2, "message": "resumed", "time": time.time()}) + "\n")
step = 2 if a.resume else 0
status("running", step)
while not stop:
    step += 1
    m.write(json.dumps({"type": "step", "step": step, "loss": 1.0 / step, "aux_loss": None, "lr": 1e-4,
                        "grad_norm": 1.0, "tokens_per_s": 100.0, "tokens": 64 * step, "time": time.time()}) + "\n")
    m.flush()
    status("running", step)
    time.sleep(0.1 if step < 3 else 0.5)
status("cancelled", step)
print("cancelled", flush=True)
sys.exit(143)
'''


@pytest.fixture
def running(tmp_path):
    import jobs

    script = tmp_path / "trainer.py"
    script.write_text(TRAINER)
    root = tmp_path / "runs"
    handle = jobs.start_run(root, "live", {"model": "m", "out": str(root / "live")}, trainer=(str(script),))
    deadline = time.monotonic() + 20
    while jobs.run_status(handle.run_dir).state != "running" or jobs.run_status(handle.run_dir).step < 1:
        assert time.monotonic() < deadline, "stand-in trainer did not start"
        time.sleep(0.05)
    yield root, handle
    if jobs.run_status(handle.run_dir).alive:
        jobs.cancel_run(handle.run_dir, timeout=5)


def wait_until(pred, timeout=20.0):
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_train_page_cancel_then_resume(running):
    import jobs

    root, handle = running
    at = S.new_app(root)
    at.query_params["run"] = "live"
    S.open_page(at, "pages/train.py")
    assert any("live**: running" in p.proto.text for p in at.get("progress"))
    assert at.button(key="train_cancel_live").click().run()
    assert not at.exception, [e.value for e in at.exception]
    wait_until(lambda: jobs.run_status(handle.run_dir).state == "cancelled")

    def resume_offered():
        at.run()  # the page notices when the cancelling thread is done
        assert not at.exception, [e.value for e in at.exception]
        return "train_resume_live" in [b.key for b in at.button]

    wait_until(resume_offered)
    assert any("live was cancelled" in w.value for w in at.warning), [w.value for w in at.warning]
    at.button(key="train_resume_live").click().run()
    assert not at.exception
    wait_until(lambda: jobs.run_status(handle.run_dir).state == "running" and jobs.run_status(handle.run_dir).launches == 2)
    at.run()
    assert at.button(key="train_cancel_live")
    (lines,) = S.layer_rows({S.chart_title(c): c for c in S.charts(at)}["main loss"], "line")
    assert lines["step"].min() == 1  # steps before the resume point are kept, later ones replaced


def test_runs_page_cancel(running):
    import jobs

    root, handle = running
    at = S.open_page(S.new_app(root), "pages/runs.py")
    assert at.dataframe[0].value.set_index("name").loc["live", "state"] == "running"
    at.multiselect(key="runs.selected").set_value(["live"]).run()
    assert "runs_delete_live" not in [b.key for b in at.button]  # no deleting a live run
    at.button(key="runs_cancel_live").click().run(timeout=60)
    assert not at.exception
    assert jobs.run_status(handle.run_dir).state == "cancelled"
    assert at.dataframe[0].value.set_index("name").loc["live", "state"] == "cancelled"
    assert at.button(key="runs_resume_live")


def test_home_builds_the_demo_suite_with_progress(tmp_path, monkeypatch):
    import sys

    from pages._common.ui_data import demo_suite as ui_data

    build = ui_data.BackgroundCommand(tmp_path / "build.log")
    monkeypatch.setattr(ui_data, "DEMO_BUILD", build)
    monkeypatch.setattr(ui_data, "demo_suite_state",
                        lambda: {"available": True, "status": {"built": False}, "error": None})
    script = "import time\nfor i in range(1, 4):\n    print(f'[{i}/4] step', flush=True); time.sleep(0.4)\n"
    monkeypatch.setattr(ui_data, "python_command", lambda *args: [sys.executable, "-c", script])
    at = S.open_page(S.new_app(tmp_path / "runs"), "pages/home.py")
    assert at.json[0].value == '{"built": false}'
    at.button(key="home_demo_build").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert build.running
    wait_until(lambda: "[1/4]" in build.tail())
    at.run()
    (bar,) = at.get("progress")
    assert "Building the demo suite" in bar.proto.text
    assert "home_demo_build" not in [b.key for b in at.button]  # one build at a time
    assert at.button(key="home_demo_stop")
    assert build.wait(20) == 0
    at.run()
    assert any("Last build finished" in s.value for s in at.success)
    assert "[3/4] step" in " ".join(c.value for c in at.code)


def test_home_stops_a_demo_build(tmp_path, monkeypatch):
    import sys

    from pages._common.ui_data import demo_suite as ui_data

    build = ui_data.BackgroundCommand(tmp_path / "build.log")
    monkeypatch.setattr(ui_data, "DEMO_BUILD", build)
    monkeypatch.setattr(ui_data, "demo_suite_state", lambda: {"available": True, "status": None, "error": None})
    monkeypatch.setattr(ui_data, "python_command",
                        lambda *a: [sys.executable, "-c", "import time; print('[1/9] x', flush=True); time.sleep(60)"])
    at = S.open_page(S.new_app(tmp_path / "runs"), "pages/home.py")
    at.button(key="home_demo_build").click().run()
    try:
        wait_until(lambda: "[1/9]" in build.tail())
        at.run()
        at.button(key="home_demo_stop").click().run()
        assert not build.running
        assert any("was stopped" in w.value for w in at.warning), [w.value for w in at.warning]
        assert at.button(key="home_demo_build")
    finally:
        build.stop()
