"""Parts of the demo suite that need no build: paths, token arrays, stage markers, progress, threads, status."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest

from lnfree_core.data.tokenizer import EOT_ID
from lnfree_core.demo import SIZES, demo_status, get_size
from lnfree_core.demo.cpu import choose_threads, torch_threads
from lnfree_core.demo.paths import (DATASET_NAMES, MODEL_NAMES, demo_dataset_path, demo_model_path, demo_root,
                                    demo_run_path)
from lnfree_core.demo.stages import STAGES, Stage, stage_key
from lnfree_core.demo.tokens import build_vocab, pack_rows, read_rows, tokenize, unigram_entropy, write_rows


# ------------------------------------------------------------------------------------------- paths
def test_default_root_is_lnfree_home_demo_under_the_current_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert demo_root() == (tmp_path / "lnfree_home" / "demo").resolve()
    assert demo_root(tmp_path / "x") == (tmp_path / "x").resolve()
    assert demo_dataset_path("owt-demo") == demo_root() / "datasets" / "owt-demo"
    assert demo_run_path("ln-free", tmp_path) == tmp_path.resolve() / "runs" / "ln-free"
    assert demo_model_path("vanilla", tmp_path, must_exist=False) == tmp_path.resolve() / "models" / "vanilla"


def test_unbuilt_or_unknown_names_fail_clearly(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match="demo build"):
        demo_model_path("ln-free")
    with pytest.raises(FileNotFoundError, match="demo build"):
        demo_dataset_path("pile-demo", must_exist=True)
    with pytest.raises(ValueError, match="original, vanilla, ln-free"):
        demo_model_path("gpt2")
    with pytest.raises(ValueError, match="owt-demo"):
        demo_dataset_path("owt")
    from lnfree_core.models import load_model

    with pytest.raises(FileNotFoundError, match="not built"):  # never taken for a Hub id
        load_model("demo:ln-free")


# ------------------------------------------------------------------------------------------- tokens
def test_pack_rows_concatenates_and_drops_the_partial_row():
    docs = [np.array([1, 2, 3]), np.array([4, 5]), np.array([6, 7, 8, 9])]
    np.testing.assert_array_equal(pack_rows(docs, 4), [[1, 2, 3, 4], [5, 6, 7, 8]])
    np.testing.assert_array_equal(pack_rows(docs, 3, max_rows=1), [[1, 2, 3]])
    assert pack_rows([], 4).shape == (0, 4)


def test_pack_rows_with_a_start_token_puts_it_at_position_0_of_every_row():
    docs = [np.array([1, 2, 3]), np.array([4, 5]), np.array([6, 7, 8, 9])]
    np.testing.assert_array_equal(pack_rows(docs, 4, start_token=99), [[99, 1, 2, 3], [99, 4, 5, 6], [99, 7, 8, 9]])
    np.testing.assert_array_equal(pack_rows(docs, 3, max_rows=2, start_token=0), [[0, 1, 2], [0, 3, 4]])
    assert pack_rows([], 4, start_token=7).shape == (0, 4)
    with pytest.raises(ValueError, match="no room"):
        pack_rows(docs, 1, start_token=7)


def test_tokenize_appends_eot_with_gpt2_ids():
    (ids,) = tokenize(["a\tb"])
    assert ids.tolist()[-1] == EOT_ID and 197 in ids.tolist()


def test_vocab_is_sorted_and_ends_with_eot():
    vocab = build_vocab(np.array([[5, 3], [3, 9]]), np.array([700]))
    assert vocab.tolist() == [3, 5, 9, 700, EOT_ID]
    with pytest.raises(ValueError):
        build_vocab(np.array([50257]))


def test_unigram_entropy():
    assert unigram_entropy(np.arange(8), 8) == pytest.approx(math.log(8))
    assert unigram_entropy(np.zeros(10, int), 3) == pytest.approx(0.0)
    assert unigram_entropy(np.array([0, 0, 0, 1]), 2) == pytest.approx(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25)))


def test_rows_round_trip_through_parquet_and_the_data_layer(tmp_path):
    from lnfree_core.data import iter_sequences

    rows = np.arange(24, dtype=np.int32).reshape(4, 6)
    write_rows(tmp_path / "train.parquet", rows)
    np.testing.assert_array_equal(read_rows(tmp_path / "train.parquet"), rows)
    got = np.stack(list(iter_sequences(tmp_path, seq_len=6)))
    np.testing.assert_array_equal(got, rows)


# ------------------------------------------------------------------------------------------- stages
def test_stage_keys_chain_parameters_and_previous_stage():
    k = stage_key("a", {"x": 1}, None)
    assert k == stage_key("a", {"x": 1}, None)
    assert k != stage_key("a", {"x": 2}, None)
    assert k != stage_key("a", {"x": 1}, "prev")
    assert k != stage_key("b", {"x": 1}, None)


def test_stage_is_finished_only_with_its_key_and_outputs(tmp_path):
    out = tmp_path / "out"
    stage = Stage(tmp_path, "filter", "k1", [out])
    assert stage.load() is None
    out.mkdir()
    (out / "f").write_text("x")
    rec = stage.finish({"n": 3}, 1.5)
    assert stage.load() == rec and rec["result"] == {"n": 3}
    assert Stage(tmp_path, "filter", "k2", [out]).load() is None  # other settings: not this build
    (out / "f").unlink()
    out.rmdir()
    assert stage.load() is None  # an output went missing: redo
    out.mkdir()
    (out / "half").write_text("x")
    stage.clear()
    assert not out.exists() and not stage.marker.exists()


# ------------------------------------------------------------------------------------------- progress
@pytest.mark.parametrize("size", list(SIZES))
def test_overall_progress_is_monotonic_and_complete(size):
    from lnfree_core.demo.build import overall_fraction, stage_weights

    s = get_size(size)
    assert sum(stage_weights(s).values()) == pytest.approx(1.0)
    points = [overall_fraction(s, st, d, 4) for st in STAGES for d in range(5)]
    assert points == sorted(points)
    assert points[0] == 0.0 and points[-1] == pytest.approx(1.0)


def test_cli_progress_lines_end_with_the_overall_percentage():
    import io

    from lnfree_core.cli.demo import ProgressPrinter
    from pages._common.ui_data.background import parse_progress

    buf = io.StringIO()
    printer = ProgressPrinter(get_size("tiny"), interval=3600, stream=buf)
    printer("datasets", 0, 10)
    printer("datasets", 5, 10)  # same stage, within the interval: not printed
    printer("pretrain", 3, 24)
    printer("evaluate", 9, 9)
    lines = buf.getvalue().splitlines()
    assert len(lines) == 3
    assert "pretrain: 3/24" in lines[1]
    assert parse_progress(lines[1]) == pytest.approx(float(lines[1].rsplit(" ", 1)[1].rstrip("%")) / 100, abs=0.01)
    assert parse_progress(lines[2]) == 1.0


# ------------------------------------------------------------------------------------------- threads
def test_thread_choice(monkeypatch):
    import torch

    from lnfree_core.demo import cpu

    assert choose_threads(3) == 3
    with pytest.raises(ValueError):
        choose_threads(0)
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    for idle, want in ((3.9, 4), (0.3, 1), (2.6, 3), (1.4, 1)):
        monkeypatch.setattr(cpu, "idle_cores", lambda idle=idle: idle)
        assert choose_threads() == want
    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def test_idle_cores_from_proc_stat_or_the_load_average(monkeypatch):
    from lnfree_core.demo import cpu

    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    samples = iter([(100.0, 400.0), (175.0, 500.0)])  # 75 of 100 jiffies idle
    monkeypatch.setattr(cpu, "_cpu_times", lambda: next(samples))
    assert cpu.idle_cores(sample_s=0) == pytest.approx(1.5)
    monkeypatch.setattr(cpu, "_cpu_times", lambda: None)
    monkeypatch.setattr(os, "getloadavg", lambda: (1.5, 0.0, 0.0))
    assert cpu.idle_cores(sample_s=0) == pytest.approx(0.5)
    monkeypatch.undo()
    assert 0.0 <= cpu.idle_cores(sample_s=0.05) <= (os.cpu_count() or 1) + 1e-9


# ------------------------------------------------------------------------------------------- status
def test_status_of_an_unbuilt_root(tmp_path):
    st = demo_status(tmp_path / "nothing")
    assert st["built"] is False and st["exists"] is False and st["summary"] is None
    assert set(st["models"]) == set(MODEL_NAMES) and set(st["datasets"]) == set(DATASET_NAMES)
    assert not any(m["built"] for m in st["models"].values())
    assert st["models"]["ln-free"]["spec"] == "demo:ln-free"
    assert not any(s["finished"] for s in st["stages"].values())
    json.dumps(st)  # JSON-ready


def test_status_does_not_import_torch():
    import subprocess
    import sys

    code = ("import sys; from lnfree_core.demo import status; status('/nonexistent'); "
            "sys.exit(1 if 'torch' in sys.modules else 0)")
    assert subprocess.run([sys.executable, "-c", code], cwd=os.getcwd()).returncode == 0


# ------------------------------------------------------------------------------------------- training outcomes
@pytest.mark.parametrize("state, reason, expected", [
    ("cancelled", "cancelled by signal SIGTERM", "SIGTERM"),
    ("cancelled", "cancelled by signal SIGINT", "SIGINT"),
    ("failed", "non-finite loss or gradient at step 4", None),
    ("finished", "finished with 2 live LN blocks (schedule ended early): ['f']", None),
])
def test_a_training_stage_that_does_not_finish_stops_the_build(tmp_path, monkeypatch, state, reason, expected):
    import signal

    from lnfree_core import train as train_mod
    from lnfree_core.demo.models_stage import DemoBuildCancelled, DemoBuildError, run_training

    monkeypatch.setattr(train_mod, "train", lambda cfg: train_mod.TrainResult(state, 4, reason))
    schedule = {"hparams": {"max_steps": 8}}
    with pytest.raises(DemoBuildError, match=reason.split(" (")[0].replace("[", r"\[")) as info:
        run_training("ln-free", "m", tmp_path / "run", tmp_path / "data", "ln-free", schedule, 0, lambda *a: None)
    if expected:
        assert isinstance(info.value, DemoBuildCancelled) and info.value.signum == getattr(signal, expected)
    else:
        assert not isinstance(info.value, DemoBuildCancelled)


def test_cli_build_reports_failure_and_ends_by_the_signal_when_stopped(monkeypatch, capsys):
    import signal

    from lnfree_core.__main__ import main
    from lnfree_core.cli import demo as cli_demo
    from lnfree_core.demo import build as build_mod
    from lnfree_core.demo.models_stage import DemoBuildCancelled, DemoBuildError

    def failing(*args, **kwargs):
        raise DemoBuildError("demo stage 'pretrain': training ended failed at step 3")

    monkeypatch.setattr(build_mod, "build_demo", failing)
    assert main(["demo", "build", "--size", "tiny", "--out", "/nonexistent/demo"]) == 1
    assert "error: demo stage 'pretrain'" in capsys.readouterr().err

    def stopped(*args, **kwargs):
        raise DemoBuildCancelled("demo stage 'vanilla' cancelled at step 5", signal.SIGTERM)

    died = []
    monkeypatch.setattr(build_mod, "build_demo", stopped)
    monkeypatch.setattr(cli_demo, "_die_by", died.append)
    assert main(["demo", "build", "--size", "tiny", "--out", "/nonexistent/demo"]) == 128 + signal.SIGTERM
    assert died == [signal.SIGTERM] and "stopped: demo stage 'vanilla'" in capsys.readouterr().err


def test_die_by_ends_the_process_by_the_signal():
    import signal
    import subprocess
    import sys

    code = "import signal; from lnfree_core.cli.demo import _die_by; _die_by(signal.SIGTERM); print('survived')"
    proc = subprocess.run([sys.executable, "-c", code], cwd=os.getcwd(), capture_output=True, text=True)
    assert proc.returncode == -signal.SIGTERM and "survived" not in proc.stdout


def test_later_settings_join_the_stage_keys_only_when_changed():
    """Suites built before row_start_eot / tie_embeddings / pretrain_weight_decay / repeat_spans / original
    existed keep their keys: a setting at its earlier value is left out of the stage's parameters."""
    import dataclasses

    from lnfree_core.demo.build import _LATER_SETTINGS, _stage_params
    from lnfree_core.demo.sizes import get_size

    earlier = dataclasses.replace(get_size("full"), **_LATER_SETTINGS)
    params = _stage_params(earlier)
    assert set(_LATER_SETTINGS) == {"row_start_eot", "tie_embeddings", "pretrain_weight_decay", "ioi_sentences",
                                    "original", "repeat_spans"}
    assert not any(k in p for p in params.values() for k in _LATER_SETTINGS)
    changed = _stage_params(dataclasses.replace(earlier, row_start_eot=True, tie_embeddings=False,
                                                pretrain_weight_decay=0.1, repeat_spans=5, original="shipped"))
    assert changed["datasets"]["row_start_eot"] is True and changed["init"]["tie_embeddings"] is False
    assert changed["pretrain"]["pretrain_weight_decay"] == 0.1 and changed["datasets"]["repeat_spans"] == 5
    assert changed["pretrain"]["original"] == "shipped"


def test_repeat_documents_are_a_training_span_twice_then_eot_and_seeded():
    from lnfree_core.demo.repeats import MAX_LEN, MIN_LEN, repeat_documents

    rng = np.random.default_rng(1)
    docs = [np.append(rng.integers(0, 50000, size=n), EOT_ID).astype(np.int32) for n in (10, 60, 200, 47)]
    reps = repeat_documents(docs, 40, seed=3)
    assert len(reps) == 40
    for r in reps:
        length = (len(r) - 1) // 2
        assert MIN_LEN <= length <= MAX_LEN and r[-1] == EOT_ID and len(r) == 2 * length + 1
        assert np.array_equal(r[:length], r[length:2 * length])
        # the span is consecutive tokens of a document long enough (60 or 200 tokens; 10 and 47 are too short)
        assert any(any(np.array_equal(d[s:s + length], r[:length]) for s in range(len(d) - length))
                   for d in docs[1:3])
    assert all(np.array_equal(a, b) for a, b in zip(reps, repeat_documents(docs, 40, seed=3)))
    assert not all(np.array_equal(a, b) for a, b in zip(reps, repeat_documents(docs, 40, seed=4)))
    with pytest.raises(ValueError, match="no training document has 48 tokens"):
        repeat_documents(docs[:1], 1, seed=0)
