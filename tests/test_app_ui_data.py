"""pages._common.ui_data: the app's Streamlit-free helpers."""

from __future__ import annotations

import json
import math
import sys
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from pages._common.ui_data import background, demo_suite, metrics, runs, schedule_view
from lnfree_core.config import ConfigError
from lnfree_core.method.presets import preset
from lnfree_core.method.schedule import HParams, ScheduleError, fit_schedule


# ---------------------------------------------------------------------------------------- schedules
def test_events_frame_has_one_row_per_event_with_group_labels():
    s = preset("gpt2")
    df = schedule_view.events_frame(s)
    assert len(df) == 37
    assert df.groupby("group").size().to_dict() == {"LN_MLP": 12, "LN_qk": 12, "LN_v": 12, "LN_f": 1}
    assert df["step"].tolist() == [e.step for e in s.events()]
    assert df[df["group"] == "LN_f"]["name"].tolist() == ["f"]
    assert df[df["name"] == "qk.3"]["step"].item() == s.starts["qk"] + 3 * s.gaps["qk"]


def test_lr_frame_follows_warmup_then_cosine():
    hp = HParams(lr=1e-3, min_lr=1e-4, warmup_steps=10, max_steps=100)
    df = schedule_view.lr_frame(hp)
    assert df["step"].tolist() == list(range(1, 101))
    assert df["lr"].iloc[0] == pytest.approx(1e-4)  # step 1 uses warmup fraction 1/10
    assert df.set_index("step").loc[10, "lr"] == pytest.approx(1e-3)
    assert df["lr"].iloc[-1] == pytest.approx(1e-4, rel=1e-2)
    assert df["lr"].iloc[10:].is_monotonic_decreasing


def test_lr_frame_samples_long_schedules():
    hp = HParams(lr=1e-3, min_lr=1e-4, warmup_steps=37, max_steps=1_000_000)
    df = schedule_view.lr_frame(hp, max_points=500)
    assert len(df) <= 502
    assert {1, 37, 38, 1_000_000} <= set(df["step"])
    assert df.set_index("step").loc[37, "lr"] == pytest.approx(1e-3)


def test_schedule_text_round_trip_yaml_and_json():
    s = fit_schedule(6, 200)
    s.name = "mine"
    for fmt, fname in (("yaml", "x.yaml"), ("json", "x.json")):
        back = schedule_view.schedule_from_text(schedule_view.schedule_to_text(s, fmt).encode(), fname)
        assert back.to_dict() == s.to_dict()
    with pytest.raises(ValueError):
        schedule_view.schedule_to_text(s, "toml")


@pytest.mark.parametrize("text, name, needle", [
    ("n_layers: [", "s.yaml", "not valid YAML"),
    ("{", "s.json", "not valid JSON"),
    ("[1, 2]", "s.json", "expected a mapping"),
    (json.dumps({"n_layers": 2, "gaps": {}}), "s.json", "missing the field 'starts'"),
    (json.dumps({"n_layers": 2, "starts": {}, "hparams": {"nope": 1}}), "s.json", "unknown hyperparameters"),
    ("n_layers: 2", "s.txt", "must end in .yaml"),
])
def test_schedule_from_text_errors_are_schedule_errors(text, name, needle):
    with pytest.raises(ScheduleError, match=needle):
        schedule_view.schedule_from_text(text, name)


def test_schedule_summary():
    assert schedule_view.schedule_summary(preset("gpt2")) == (
        "gpt2: 12 layers, 300 steps, 37 removal events at steps 20..104, 524,288 tokens/step")


# ---------------------------------------------------------------------------------------- metrics rows
ROWS = [
    {"type": "step", "step": 1, "loss": 5.0, "aux_loss": 0.1, "lr": 1e-4, "grad_norm": 2.0, "tokens_per_s": 100.0,
     "tokens": 64, "sigma": {"mlp.0": 1.0, "qk.0": 2.0, "v.0": 2.0, "f": 3.0}, "time": 10.0},
    {"type": "event", "kind": "removal", "step": 1, "block": "mlp", "layer": 0, "sigma": 1.0, "time": 10.5},
    {"type": "event", "kind": "checkpoint", "step": 1, "message": "ckpt", "time": 10.6},
    {"type": "step", "step": 2, "loss": "nan", "aux_loss": None, "lr": 2e-4, "grad_norm": "inf",
     "tokens_per_s": 120.0, "tokens": 128, "sigma": {"mlp.0": 1.0, "qk.0": 2.5, "v.0": 2.5, "f": 3.5}, "time": 11.0},
    {"type": "event", "kind": "removal", "step": 2, "block": "f", "layer": None, "sigma": 3.5, "time": 11.5},
    {"type": "event", "kind": "grad_spike", "step": 2, "message": "spike!", "time": 11.6},
]


def test_step_frame_parses_nan_strings_and_none():
    df = metrics.step_frame(ROWS)
    assert df["step"].tolist() == [1, 2]
    assert math.isnan(df["loss"].iloc[1]) and math.isinf(df["grad_norm"].iloc[1])
    assert math.isnan(df["aux_loss"].iloc[1])
    assert df["tokens"].tolist() == [64, 128]


def test_step_frame_keeps_the_last_row_of_a_repeated_step():
    rows = [dict(ROWS[0]), {**ROWS[0], "loss": 4.0}]
    assert metrics.step_frame(rows)["loss"].tolist() == [4.0]
    assert metrics.step_frame([]).empty


def test_sigma_removal_and_notable_frames():
    sig = metrics.sigma_frame(ROWS)
    assert len(sig) == 8
    assert set(sig["group"]) == {"LN_MLP", "LN_qk", "LN_v", "LN_f"}
    assert sig[(sig["block"] == "qk.0") & (sig["step"] == 2)]["sigma"].item() == 2.5
    rem = metrics.removal_frame(ROWS)
    assert rem["name"].tolist() == ["mlp.0", "f"]
    assert rem["group"].tolist() == ["LN_MLP", "LN_f"]
    notes = metrics.notable_events(ROWS)
    assert notes["kind"].tolist() == ["grad_spike"]
    assert metrics.sigma_frame([{"type": "step", "step": 1, "sigma": None}]).empty


def test_metric_long_drops_missing_values():
    long = metrics.metric_long({"a": metrics.step_frame(ROWS)}, ["loss", "aux_loss"])
    assert long[long["metric"] == "loss"]["step"].tolist() == [1]
    assert long[long["metric"] == "aux_loss"]["value"].tolist() == [0.1]
    assert metrics.metric_long({"a": metrics.step_frame([])}).empty


# ---------------------------------------------------------------------------------------- downsampling
def test_downsample_keeps_small_frames_whole():
    df = pd.DataFrame({"step": [3, 1, 2], "value": [1.0, 2.0, 3.0]})
    assert metrics.downsample(df, max_points=10)["step"].tolist() == [1, 2, 3]


def test_downsample_bounds_points_and_keeps_ends_and_spikes():
    n = 100_000
    y = np.sin(np.arange(n) / 500.0)
    y[54_321] = 50.0  # a loss spike
    y[77_777] = -50.0
    df = pd.DataFrame({"step": np.arange(1, n + 1), "value": y, "run": "a"})
    out = metrics.downsample(df, by=["run"], max_points=2000)
    assert len(out) <= 2002
    assert out["step"].iloc[0] == 1 and out["step"].iloc[-1] == n
    assert 50.0 in out["value"].tolist() and -50.0 in out["value"].tolist()
    assert out["step"].is_monotonic_increasing


def test_downsample_shares_the_budget_between_series():
    n = 10_000
    df = pd.concat([pd.DataFrame({"step": np.arange(n), "value": np.random.default_rng(i).normal(size=n),
                                  "run": f"r{i}"}) for i in range(4)])
    out = metrics.downsample(df, by=["run"], max_points=3000)
    sizes = out.groupby("run").size()
    assert set(sizes.index) == {"r0", "r1", "r2", "r3"}
    assert sizes.max() <= 3000 // 4 + 2
    assert len(out) <= 3000 + 8


def test_downsample_survives_all_nan_buckets():
    y = np.full(1000, np.nan)
    y[-1] = 1.0
    df = pd.DataFrame({"step": np.arange(1000), "value": y})
    out = metrics.downsample(df, max_points=50)
    assert len(out) <= 52 and out["step"].iloc[-1] == 999


# ---------------------------------------------------------------------------------------- progress
def steps_df(times, tokens_per_step=100, tps=50.0):
    return pd.DataFrame({"step": np.arange(1, len(times) + 1), "time": times,
                         "tokens": tokens_per_step * np.arange(1, len(times) + 1), "tokens_per_s": tps,
                         "loss": 1.0, "aux_loss": 0.0, "lr": 1e-4, "grad_norm": 1.0})


def test_eta_averages_noisy_step_times():
    df = steps_df([0.0, 0.1, 0.2, 3.0, 3.1, 3.2, 6.0])  # bursts: the median gap (0.1) would mislead
    assert runs.seconds_per_step(df) == pytest.approx(1.0)


def test_eta_from_step_times():
    df = steps_df([0.0, 2.0, 4.0, 6.0, 100.0, 102.0])  # one long pause (e.g. a resume) is left out
    assert runs.seconds_per_step(df) == pytest.approx(2.0)
    assert runs.eta_seconds(df, 6, 16) == pytest.approx(20.0)
    assert runs.eta_seconds(df, 16, 16) == 0.0
    assert runs.eta_seconds(df, 6, None) is None


def test_eta_from_tokens_per_second_with_one_step():
    df = steps_df([5.0], tokens_per_step=100, tps=50.0)
    assert runs.eta_seconds(df, 1, 11) == pytest.approx(10 * 2.0)
    assert runs.eta_seconds(steps_df([]), 0, 10) is None


@pytest.mark.parametrize("sec, text", [(None, "?"), (float("nan"), "?"), (12.4, "12 s"), (200, "3 min 20 s"),
                                       (3900, "1 h 05 min")])
def test_format_duration(sec, text):
    assert runs.format_duration(sec) == text


def test_progress_text():
    assert runs.progress_text(30, 300, 90.0, "running") == (0.1, "running: step 30 of 300 (10%), about 1 min 30 s left")
    assert runs.progress_text(300, 300, 0.0, "finished") == (1.0, "finished: step 300 of 300 (100%)")
    assert runs.progress_text(3, None, None, "queued") == (0.0, "queued: step 3")


# ---------------------------------------------------------------------------------------- files
def test_tail_lines(tmp_path):
    p = tmp_path / "log"
    assert background.tail_lines(p) == ""
    p.write_text("".join(f"line {i}\n" for i in range(100)) + "bar 10%\rbar 50%\rbar 100%\n\n")
    assert background.tail_lines(p, 3) == "line 98\nline 99\nbar 100%"
    assert background.tail_lines(p, 2, max_bytes=36).splitlines() == ["line 99", "bar 100%"]
    assert background.tail_lines(p, 2, max_bytes=30).splitlines() == ["bar 100%"]  # a cut first line is dropped


def test_run_request_prefers_the_resolved_config(tmp_path):
    assert runs.run_request(tmp_path) == {}
    (tmp_path / "request.yaml").write_text("mode: vanilla\nmodel: a\n")
    assert runs.run_request(tmp_path)["model"] == "a"
    (tmp_path / "config.yaml").write_text("mode: ln-free\nmodel: b\n")
    assert runs.run_request(tmp_path) == {"mode": "ln-free", "model": "b"}


# ---------------------------------------------------------------------------------------- launching
def test_device_choices():
    assert [d.device for d in runs.device_choices(0)] == ["cpu"]
    devs = runs.device_choices(3)
    assert [(d.device, d.nproc, d.distributed) for d in devs] == [
        ("cpu", 1, "ddp"), ("cuda:0", 1, "ddp"), ("cuda:1", 1, "ddp"), ("cuda:2", 1, "ddp"),
        ("cuda", 2, "ddp"), ("cuda", 3, "ddp"), ("cuda", 2, "fsdp"), ("cuda", 3, "fsdp")]


def test_pair_names_and_partner():
    assert runs.pair_names("x") == ("x-lnfree", "x-vanilla")
    assert runs.partner_run("x-lnfree") == "x-vanilla"
    assert runs.partner_run("x-vanilla") == "x-lnfree"
    assert runs.partner_run("x") is None and runs.partner_run("-lnfree") is None


def test_launch_plan_single_and_pair(tmp_path):
    (one,) = runs.launch_plan(tmp_path, "r", model="m", dataset="d", schedule="gpt2", mode="vanilla", device="cpu",
                           overrides={"max_steps": 5, "seq_len": None})
    assert one[0] == "r"
    assert one[1]["mode"] == "vanilla" and one[1]["out"] == str(tmp_path / "r")
    assert one[1]["overrides"] == {"max_steps": 5}
    sched = fit_schedule(2, 20).to_dict()
    pair = runs.launch_plan(tmp_path, "p", model="m", dataset="d", schedule=sched, mode="pair",
                         overrides={"micro_batch_size": 2}, seed=7, save_every=5)
    assert [n for n, _ in pair] == ["p-lnfree", "p-vanilla"]
    a, b = (cfg for _, cfg in pair)
    assert (a["mode"], b["mode"]) == ("ln-free", "vanilla")
    same = {k: v for k, v in a.items() if k not in ("mode", "out")}
    assert same == {k: v for k, v in b.items() if k not in ("mode", "out")}
    assert a["seed"] == 7 and a["save_every"] == 5 and a["schedule"] == sched


def test_launch_plan_rejects_bad_input(tmp_path):
    with pytest.raises(ConfigError, match="unknown hyperparameter overrides"):
        runs.launch_plan(tmp_path, "r", model="m", dataset="d", schedule="gpt2", mode="ln-free",
                      overrides={"bogus": 1})
    with pytest.raises(ValueError, match="mode"):
        runs.launch_plan(tmp_path, "r", model="m", dataset="d", schedule="gpt2", mode="both")
    with pytest.raises(ValueError, match="model"):
        runs.launch_plan(tmp_path, "r", model="", dataset="d", schedule="gpt2", mode="ln-free")


def test_runs_frame(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "request.yaml").write_text("mode: ln-free\nmodel: gpt2\ndataset: owt\n")
    sts = [SimpleNamespace(name="a", run_dir=str(tmp_path / "a"), state="running", step=25, max_steps=100,
                           last_metrics={"loss": 3.5}, started=1.7e9, reason=None),
           SimpleNamespace(name="b", run_dir=str(tmp_path / "b"), state="failed", step=0, max_steps=None,
                           last_metrics=None, started=None, reason="boom")]
    df = runs.runs_frame(sts)
    assert df["progress"].tolist() == [0.25, 0.0]
    assert df["loss"].iloc[0] == 3.5 and math.isnan(df["loss"].iloc[1])
    assert df["mode"].tolist() == ["ln-free", ""]
    assert df["reason"].tolist() == ["", "boom"]
    assert runs.runs_frame([]).empty


def test_metrics_cache_reads_incrementally_and_merges_resumes(tmp_path):
    path = tmp_path / "metrics.jsonl"
    cache = metrics.MetricsCache(str(tmp_path))
    assert cache.update() == []
    with open(path, "w") as f:
        for s in (1, 2, 3):
            f.write(json.dumps({"type": "step", "step": s, "loss": float(s)}) + "\n")
        f.write('{"type": "step", "st')  # half a line: not read yet
    assert [r["step"] for r in cache.update()] == [1, 2, 3]
    first = cache.offset
    with open(path, "a") as f:
        f.write('ep": 4}\n')
        f.write(json.dumps({"type": "event", "kind": "resumed", "step": 2, "message": "r"}) + "\n")
        f.write(json.dumps({"type": "step", "step": 3, "loss": 30.0}) + "\n")
    rows = cache.update()
    assert cache.offset > first
    assert [(r["type"], r["step"]) for r in rows] == [("step", 1), ("step", 2), ("event", 2), ("step", 3)]
    assert rows[-1]["loss"] == 30.0
    path.write_text(json.dumps({"type": "step", "step": 1, "loss": 9.0}) + "\n")  # replaced: start over
    assert [r["loss"] for r in cache.update()] == [9.0]


# ---------------------------------------------------------------------------------------- background commands
@pytest.mark.parametrize("text, frac", [("", None), ("building\n[3/10] model", 0.3), ("a 5/10\nb 42%", 0.42),
                                        ("step 12/4", None), ("done 100%", 1.0), ("50% then [1/4]", 0.25)])
def test_parse_progress(text, frac):
    assert background.parse_progress(text) == (pytest.approx(frac) if frac is not None else None)


def test_background_command_runs_and_reports(tmp_path):
    cmd = background.BackgroundCommand(tmp_path / "b.log")
    assert not cmd.running and cmd.returncode is None and cmd.tail() == ""
    cmd.start([sys.executable, "-c", "import time; print('[1/2] a', flush=True); time.sleep(0.5); print('[2/2] b')"])
    with pytest.raises(RuntimeError):
        cmd.start([sys.executable, "-c", "pass"])
    assert cmd.wait(20) == 0
    assert not cmd.running and cmd.returncode == 0
    assert cmd.tail() == "[1/2] a\n[2/2] b"
    assert cmd.progress() == 1.0
    cmd.start([sys.executable, "-c", "import sys; sys.exit(3)"])
    assert cmd.wait(20) == 3
    cmd.start([sys.executable, "-c", "import time; time.sleep(60)"])
    assert cmd.running
    assert cmd.stop() == -15 and not cmd.running


def fake_modules(monkeypatch, present: dict):
    """find_spec / import_module see `present` ({module name: module object}) as installed, and
    lnfree_core.cli.demo / lnfree_core.demo* as absent otherwise."""
    import importlib
    import importlib.util

    real_find, real_import = importlib.util.find_spec, importlib.import_module

    def find(name, *a):
        if name in present:
            return object()
        return None if name.startswith(("lnfree_core.demo", "lnfree_core.cli.demo")) else real_find(name, *a)

    monkeypatch.setattr(importlib.util, "find_spec", find)
    monkeypatch.setattr(importlib, "import_module",
                        lambda name, *a: present[name] if name in present else real_import(name, *a))


def test_demo_suite_state_without_the_module(monkeypatch):
    fake_modules(monkeypatch, {})
    assert demo_suite.demo_suite_state() == {"available": False, "status": None, "error": None}
    assert not demo_suite.demo_models_available()
    # a package folder without the command (e.g. only part of the suite written) is not a suite yet
    fake_modules(monkeypatch, {"lnfree_core.demo": SimpleNamespace()})
    assert demo_suite.demo_suite_state()["available"] is False


def test_demo_suite_state_with_a_status_function(monkeypatch):
    fake = SimpleNamespace(status=lambda: {"built": True})
    fake_modules(monkeypatch, {"lnfree_core.cli.demo": SimpleNamespace(), "lnfree_core.demo": fake,
                               "lnfree_core.demo.paths": SimpleNamespace()})
    assert demo_suite.demo_suite_state() == {"available": True, "status": {"built": True}, "error": None}
    assert demo_suite.demo_models_available()
    fake.status = lambda: 1 / 0
    state = demo_suite.demo_suite_state()
    assert state["available"] and "ZeroDivisionError" in state["error"]
