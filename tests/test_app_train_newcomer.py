"""The Train page as a newcomer meets it (AppTest): offline it offers the demo model and data first,
the form adapts to the chosen model and refuses a mismatch before Launch, and the live view's labels
and controls follow the run (no stale "queued", no "starting" after a failure, no Resume for a run
that failed at setup)."""

from __future__ import annotations

import json
import os
import shutil
import time

import pytest

import test_app_support as S  # tests/ is on sys.path (pytest rootdir conftest)
from _tiny import tiny_model

CONTEXT, LAYERS = 32, 3  # a demo-like model: fewer positions than any preset's 1024, a layer count no preset has


@pytest.fixture
def demo_home(tmp_path, monkeypatch):
    """A built-looking demo suite at ./lnfree_home/demo (what `demo build` leaves), cwd = tmp_path."""
    monkeypatch.chdir(tmp_path)
    demo = tmp_path / "lnfree_home" / "demo"
    for name in ("original", "vanilla", "ln-free"):
        tiny_model(seed=0, n_layer=LAYERS, n_positions=CONTEXT).save_pretrained(str(demo / "models" / name))
    for name in ("owt-demo", "pile-demo", "pile-filtered-demo"):
        (demo / "datasets" / name).mkdir(parents=True)
        shutil.copy(S.REPO / "README.md", demo / "datasets" / name / "README.md")
        (demo / "datasets" / name / "train.parquet").write_bytes(b"")
    return tmp_path


def _train(root):
    return S.open_page(S.new_app(root), "pages/train.py")


def test_offline_defaults_are_the_demo_model_and_data_adapted_to_it(demo_home):
    root = demo_home / "runs"
    at = _train(root)
    assert at.radio(key="train.model.kind").value == "demo"
    assert at.selectbox(key="train.model.demo").value.startswith("demo:")
    assert "demo" in str(at.selectbox(key="train.data.name").value)
    assert at.radio(key="train.sched_src").value == "auto"  # no preset has 3 layers
    assert at.number_input(key="train.ov.seq_len").value == CONTEXT
    assert any("Adapted to the model" in c.value for c in at.caption)
    assert not at.error
    assert not at.button(key="train_launch").disabled


def test_a_sequence_length_beyond_the_model_is_refused_before_launch(demo_home):
    at = _train(demo_home / "runs")
    at.number_input(key="train.ov.seq_len").set_value(CONTEXT * 4).run()
    assert any("longer than the model's context" in e.value for e in at.error)
    assert at.button(key="train_launch").disabled


def test_a_preset_for_another_layer_count_is_refused_before_launch(demo_home):
    at = _train(demo_home / "runs")
    at.radio(key="train.sched_src").set_value("preset").run()
    at.selectbox(key="train.preset").set_value("gpt2").run()
    assert any("12 layers but the model has 3" in e.value for e in at.error)
    assert "--schedule" not in " ".join(e.value for e in at.error)
    assert at.button(key="train_launch").disabled


def test_launch_form_stays_open_on_its_first_click(tmp_path):
    root = tmp_path / "runs"
    S.write_fake_run(root, "old-run")
    at = S.new_app(root)
    at.run()
    at.switch_page("pages/train.py").run()
    first = at.expander[0].proto.expanded
    at.text_input(key="train.name").input("my-run").run()
    assert at.expander[0].proto.expanded == first


def test_a_run_that_failed_at_setup_offers_no_resume_and_no_starting_message(tmp_path):
    root = tmp_path / "runs"
    S.write_fake_run(root, "bad", state="failed", steps=0, max_steps=40, reason="cannot set up the run: boom")
    (root / "bad" / "metrics.jsonl").write_text("")
    shutil.rmtree(root / "bad" / "checkpoints", ignore_errors=True)
    at = S.new_app(root)
    at.query_params["run"] = "bad"
    at.run()
    at.switch_page("pages/train.py").run()
    labels = [b.label for b in at.button]
    assert not any(label.startswith("Resume") for label in labels), labels
    shown = " ".join(i.value for i in at.info)
    assert "the job is starting" not in shown
    assert "nothing to resume" in " ".join(c.value for c in at.caption)
    S.write_fake_run(root, "nan", state="failed", steps=4, reason="loss became NaN at step 5")
    at = S.new_app(root)
    at.query_params["run"] = "nan"
    at.run()
    at.switch_page("pages/train.py").run()
    assert "train_resume_nan" in [b.key for b in at.button]  # failed after training began: resumable


def test_run_picker_shows_a_live_run_without_a_frozen_step(tmp_path):
    from pages._common import pickers

    root = tmp_path / "runs"
    S.write_fake_run(root, "live", state="running", steps=3, max_steps=40)
    (root / "live" / "status.json").write_text(json.dumps({"state": "running", "step": 3, "max_steps": 40,
                                                           "pid": os.getpid(), "started": time.time(),
                                                           "updated": time.time()}))  # this process: alive
    at = S.open_page(S.new_app(root), "pages/train.py")
    picker = at.selectbox(key="train.watch")
    label = picker.format_func(picker.value) if hasattr(picker, "format_func") else str(picker.proto.options)
    assert "step 3/40" not in label
    assert pickers is not None
