"""Nothing a user does loses work (issue 16): locks, checkpoint verification, safe export overwrite,
validation before any work, ghost runs, resume flags, metrics repair, and the model card's provenance."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from lnfree_core.checkpoint import CKPT_DIR, verify_checkpoint
from lnfree_core.config import ConfigError, TrainConfig
from lnfree_core.export import ExportError, export_model
from lnfree_core.runlock import TrainerLock, lock_holder
from lnfree_core.rundir import read_jsonl
from lnfree_core.method.schedule import Schedule, ScheduleError
from lnfree_core.train import train

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
SMALL = dict(max_steps=10, micro_batch_size=2, grad_accum_steps=1, seq_len=16, warmup_steps=1, lr=3e-3, min_lr=1e-3)


def _cfg(model, data, out, **kw):
    over = {**SMALL, **kw.pop("overrides", {})}
    return TrainConfig(model=str(model), dataset=str(data), schedule="auto", out=str(out), overrides=over,
                       save_every=kw.pop("save_every", 5), device="cpu", **kw)


def _steps(run):
    return [r for r in read_jsonl(Path(run) / "metrics.jsonl") if r["type"] == "step"]


def _cli(*args, cwd=None, module="lnfree_core"):
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], env=ENV, capture_output=True, text=True,
                          timeout=300, cwd=str(cwd or REPO))


@pytest.fixture
def finished_run(tiny_model_dir, tiny_dataset, tmp_path):
    run = tmp_path / "sandbox" / "run"
    train(_cfg(tiny_model_dir, tiny_dataset, run, keep_checkpoints=3))
    return run


# ------------------------------------------------------------------------------------------- export overwrite
def test_export_overwrite_never_deletes_a_run_or_its_siblings(finished_run, tmp_path):
    sandbox = finished_run.parent
    (sandbox / "notes.txt").write_text("mine")
    before = sorted(p.name for p in (finished_run / CKPT_DIR).iterdir())
    for target in (finished_run, sandbox, finished_run / "checkpoints", finished_run / "sub"):
        with pytest.raises(ExportError, match="run directory|not an earlier lnfree export"):
            export_model(str(finished_run), target, overwrite=True)
    assert sorted(p.name for p in (finished_run / CKPT_DIR).iterdir()) == before
    assert (sandbox / "notes.txt").read_text() == "mine" and (finished_run / "metrics.jsonl").exists()
    other = tmp_path / "other"
    other.mkdir()
    (other / "thesis.tex").write_text("x")
    with pytest.raises(ExportError, match="not an earlier lnfree export"):
        export_model(str(finished_run), other, overwrite=True)
    assert (other / "thesis.tex").exists()
    # a folder holding a run (run markers deeper down) is not replaced either, marker or not
    holder = tmp_path / "holder"
    (holder / "inner").mkdir(parents=True)
    (holder / "lnfree_export.json").write_text("{}")
    (holder / "inner" / "status.json").write_text("{}")
    with pytest.raises(ExportError, match="holds the run directory"):
        export_model(str(finished_run), holder, overwrite=True)
    assert (holder / "inner" / "status.json").exists()
    # an earlier export is replaced
    out = tmp_path / "exports" / "run"
    export_model(str(finished_run), out)
    (out / "stale.bin").write_text("old")
    export_model(str(finished_run), out, overwrite=True)
    assert not (out / "stale.bin").exists() and (out / "model.safetensors").exists()


def test_export_cli_into_a_run_or_a_file_is_a_message(finished_run, tmp_path):
    r = _cli("export", finished_run, finished_run, "--overwrite")
    assert r.returncode == 2 and "run directory" in r.stderr and "Traceback" not in r.stderr
    assert (finished_run / "metrics.jsonl").exists() and (finished_run / CKPT_DIR).is_dir()
    f = tmp_path / "afile"
    f.write_text("x")
    r = _cli("export", finished_run, f)
    assert r.returncode == 2 and "is a file" in r.stderr and "Traceback" not in r.stderr
    r = _cli("export", f"{finished_run}@abc", tmp_path / "e")
    assert r.returncode == 2 and "step number" in r.stderr and "Traceback" not in r.stderr


def test_publish_replace_goes_through_the_same_check(finished_run):
    from lnfree_core.publish import PublishInputError, prepare_export

    with pytest.raises(PublishInputError, match="run directory"):
        prepare_export(finished_run, finished_run, "user/model", overwrite=True)
    assert (finished_run / "config.yaml").exists()


# ------------------------------------------------------------------------------------------------- run lock
def test_one_trainer_per_run_and_jobs_see_it(finished_run, tiny_model_dir, tiny_dataset):
    from jobs import RunActiveError, delete_run, list_runs, run_status

    lock = TrainerLock(finished_run).acquire()  # stands for a live trainer (any process holding the lock)
    try:
        assert lock_holder(finished_run) == os.getpid()
        with pytest.raises(ConfigError, match="being trained by another process"):
            train(_cfg(tiny_model_dir, tiny_dataset, finished_run), resume=True)
        st = run_status(finished_run)
        assert st.alive and st.pid == os.getpid()
        assert [s.alive for s in list_runs(finished_run.parent)] == [True]
        with pytest.raises(RunActiveError):
            delete_run(finished_run)
    finally:
        lock.release()
    assert lock_holder(finished_run) is None
    assert (finished_run / "checkpoints").is_dir()


def test_a_stale_lock_of_a_dead_trainer_is_taken_over(tiny_model_dir, tiny_dataset, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "trainer.lock").write_text(json.dumps({"pid": 999999, "since": 0}))  # the trainer died long ago
    res = train(_cfg(tiny_model_dir, tiny_dataset, run))
    assert res.state == "finished" and lock_holder(run) is None


def test_concurrent_cli_trainers_one_is_refused(tiny_model_dir, tiny_dataset, tmp_path):
    run = tmp_path / "run"
    args = ["train", "--model", tiny_model_dir, "--dataset", tiny_dataset, "--schedule", "auto", "--out", run,
            "--max-steps", "400", "--batch-size", "2", "--seq-len", "16", "--device", "cpu", "--save-every", "50"]
    first = subprocess.Popen([sys.executable, "-m", "lnfree_core", *map(str, args)], env=ENV, cwd=str(REPO),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while not _steps(run) and time.time() < deadline and first.poll() is None:
            time.sleep(0.2)
        assert _steps(run), first.stderr.read() if first.poll() is not None else "no step"
        second = _cli(*args[:-2], "--save-every", "50", "--resume")
        assert second.returncode == 2 and "being trained by another process" in second.stderr
        assert f"pid {first.pid}" in second.stderr
        status = json.loads((run / "status.json").read_text())
        assert status["pid"] == first.pid  # the second trainer never wrote there
    finally:
        first.send_signal(signal.SIGTERM)
        first.wait(120)
    assert json.loads((run / "status.json").read_text())["state"] == "cancelled"


# --------------------------------------------------------------------------------------------- checkpoints
def test_partial_checkpoint_folders_are_removed_on_start(finished_run, tiny_model_dir, tiny_dataset):
    tmp = finished_run / CKPT_DIR / ".tmp_step_00000099_12345"
    tmp.mkdir()
    (tmp / "model.safetensors").write_bytes(b"\0" * 1000)
    # resume of a finished run: it stops at once, but only after cleaning up
    train(TrainConfig(model="(from config.yaml)", out=str(finished_run)), resume=True)
    assert not tmp.exists()


def test_a_corrupt_newest_checkpoint_falls_back_with_a_warning(tiny_model_dir, tiny_dataset, tmp_path, capsys):
    full = tmp_path / "full"
    train(_cfg(tiny_model_dir, tiny_dataset, full, overrides={"max_steps": 10}, save_every=3, keep_checkpoints=5))
    run = tmp_path / "run"
    train(_cfg(tiny_model_dir, tiny_dataset, run, overrides={"max_steps": 10}, save_every=3, keep_checkpoints=5))
    # pretend the run died at step 9 with checkpoint 9 half-written: truncate its weights
    (run / "status.json").write_text(json.dumps({"state": "failed", "step": 9}))
    newest = run / CKPT_DIR / "step_00000009"
    for step in (10,):
        import shutil

        shutil.rmtree(run / CKPT_DIR / f"step_{step:08d}")
    data = (newest / "model.safetensors").read_bytes()
    (newest / "model.safetensors").write_bytes(data[: len(data) // 2])
    assert "bytes, the manifest says" in verify_checkpoint(newest)
    capsys.readouterr()
    res = train(TrainConfig(model="(from config.yaml)", out=str(run)), resume=True)
    out = capsys.readouterr()
    assert res.state == "finished" and res.step == 10
    assert "step_00000009" in out.err and "steps 7-9 will be redone" in out.err
    assert (run / CKPT_DIR / "corrupt_step_00000009").is_dir()
    resumed = [r for r in read_jsonl(run / "metrics.jsonl") if r.get("kind") == "resumed"]
    assert "resumed from step_00000006" in resumed[-1]["message"] and "will be redone" in resumed[-1]["message"]
    # the redone steps match an uninterrupted run (merged: newest value of each step)
    merged = {r["step"]: r["loss"] for r in _steps(run)}
    assert [merged[s] for s in range(1, 11)] == pytest.approx([r["loss"] for r in _steps(full)], rel=1e-5)


def test_garbage_json_checkpoint_gives_export_and_load_messages(finished_run, tmp_path):
    newest = finished_run / CKPT_DIR / "step_00000010"
    (newest / "trainer_state.json").write_text("{garbage")
    with pytest.raises(ExportError, match="corrupt"):
        export_model(f"{finished_run}@10", tmp_path / "e")
    r = _cli("export", f"{finished_run}@10", tmp_path / "e2")
    assert r.returncode == 2 and "corrupt" in r.stderr and "Traceback" not in r.stderr
    # the run itself: the newest good checkpoint, with a warning saying which one was skipped
    r = _cli("export", finished_run, tmp_path / "e3", "--allow-live")
    assert "step_00000010" in r.stderr and "warning" in r.stderr
    assert "Traceback" not in r.stderr


def test_checkpoints_carry_a_manifest_that_detects_a_flipped_byte(finished_run):
    ckpt = finished_run / CKPT_DIR / "step_00000010"
    man = json.loads((ckpt / "manifest.json").read_text())
    assert set(man["files"]) >= {"model.safetensors", "optimizer.safetensors", "trainer_state.json", "fakeln.json"}
    assert verify_checkpoint(ckpt) is None
    raw = bytearray((ckpt / "model.safetensors").read_bytes())
    raw[-5] ^= 0xFF  # same size, different content
    (ckpt / "model.safetensors").write_bytes(bytes(raw))
    assert "SHA-256" in verify_checkpoint(ckpt)


# -------------------------------------------------------------------------------- cancel during a checkpoint
def test_cancel_waits_for_a_checkpoint_in_progress(tmp_path):
    from jobs import cancel_run

    run = tmp_path / "runs" / "slow"
    run.mkdir(parents=True)
    script = tmp_path / "slow_ckpt.py"
    script.write_text(textwrap.dedent(f"""
        import json, os, signal, time
        run = {str(run)!r}
        def status(state, ck):
            tmp = os.path.join(run, ".s.tmp")
            json.dump({{"state": state, "step": 5, "max_steps": 10, "pid": os.getpid(), "reason": None,
                       "updated": time.time(), "started": time.time() - 1, "checkpointing": ck}}, open(tmp, "w"))
            os.replace(tmp, os.path.join(run, "status.json"))
        stop = []
        signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
        status("running", True)          # a long checkpoint write starts
        open(os.path.join(run, "ready"), "w").close()
        time.sleep(3.0)                  # longer than the cancel timeout below
        status("running", False)
        open(os.path.join(run, "ckpt_done"), "w").close()
        status("cancelled" if stop else "running", False)
    """))
    proc = subprocess.Popen([sys.executable, str(script)])
    deadline = time.time() + 30
    while not (run / "ready").exists() and time.time() < deadline:
        time.sleep(0.05)
    st = cancel_run(run, timeout=0.5)
    proc.wait(10)
    assert (run / "ckpt_done").exists(), "the job was killed in the middle of its checkpoint"
    assert st.state == "cancelled" and "SIGKILL" not in (st.reason or "")


# ------------------------------------------------------------------------------------ validation before work
def _write_ids(path: Path, rows) -> Path:
    with open(path, "w") as fh:
        for row in rows:
            fh.write(json.dumps({"input_ids": row}) + "\n")
    return path


@pytest.mark.parametrize("rows, words", [
    ([[5] * 40] * 20 + [[200] * 40], "token id 200, outside the model's vocabulary of 128"),
    ([[5] * 40] * 20 + [[-3] * 40], "negative token id"),
    ([[0.5] * 40] * 21, "must be integers"),
])
def test_bad_token_ids_are_refused_before_any_work(rows, words, tiny_model_dir, tmp_path):
    data = _write_ids(tmp_path / "bad.jsonl", rows)
    run = tmp_path / "run"
    with pytest.raises(ConfigError, match=words):
        train(_cfg(tiny_model_dir, data, run))
    assert not run.exists()  # nothing left behind


def test_text_data_on_a_small_vocabulary_and_seq_len_beyond_positions(tiny_model_dir, tiny_dataset, tmp_path):
    text = tmp_path / "doc.txt"
    text.write_text("hello world " * 200)
    r = _cli("train", "--model", tiny_model_dir, "--dataset", text, "--schedule", "auto", "--out", tmp_path / "r1",
             "--max-steps", "10", "--seq-len", "16", "--device", "cpu")
    assert r.returncode == 2 and "GPT-2 tokenizer" in r.stderr and "128 entries" in r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "r1").exists()
    r = _cli("train", "--model", tiny_model_dir, "--dataset", tiny_dataset, "--schedule", "auto",
             "--out", tmp_path / "r2", "--max-steps", "10", "--seq-len", "65", "--device", "cpu")
    assert r.returncode == 2 and "longer than the model's" in r.stderr and "64 positions" in r.stderr and "--seq-len 64" in r.stderr
    assert not (tmp_path / "r2").exists()
    r = _cli("train", "--model", tiny_model_dir, "--dataset", tiny_dataset, "--out", tmp_path / "r3",
             "--device", "tpu9")
    assert r.returncode == 2 and "tpu9" in r.stderr and "Traceback" not in r.stderr


def _sched(**changes) -> dict:
    d = Schedule(n_layers=2, starts={"mlp": 1, "qk": 3, "v": 5, "f": 7}, gaps={"mlp": 1, "qk": 1, "v": 1}).to_dict()
    d["hparams"]["max_steps"], d["hparams"]["warmup_steps"] = 10, 1
    for k, v in changes.items():
        if k.startswith("hp_"):
            d["hparams"][k[3:]] = v
        else:
            d[k] = v
    return d


@pytest.mark.parametrize("changes, words", [
    (dict(gaps={"mlp": 1, "qkk": 1, "v": 1}), "unknown key ['qkk'] in gaps; did you mean 'qk'?"),
    (dict(starts={"mlp": 1, "qkk": 3, "v": 5, "f": 7}), "did you mean 'qk'"),
    (dict(hp_aux_weigth=0.1), "did you mean 'aux_weight'?"),
    (dict(hp_lr="fast"), "hparams.lr must be a number, got 'fast'"),
    (dict(hp_aux_weight=-0.1), "aux_weight must be >= 0"),
    (dict(hp_weight_decay=-0.01), "weight_decay must be >= 0"),
    (dict(hp_max_steps=10.5), "hparams.max_steps must be a whole number, got 10.5"),
    (dict(starts={"mlp": "one", "qk": 3, "v": 5, "f": 7}), "starts.mlp must be a whole number"),
])
def test_schedule_file_errors_name_the_key_the_value_and_what_is_allowed(changes, words, tmp_path):
    path = tmp_path / "s.json"
    path.write_text(json.dumps(_sched(**changes)))
    with pytest.raises(ScheduleError) as e:
        Schedule.load(path).validate()
    assert words in str(e.value)


def test_schedule_file_errors_are_exit_2_from_train(tiny_model_dir, tiny_dataset, tmp_path):
    path = tmp_path / "s.yaml"
    import yaml

    path.write_text(yaml.safe_dump(_sched(hp_aux_weight="0.1")))
    r = _cli("train", "--model", tiny_model_dir, "--dataset", tiny_dataset, "--schedule", path,
             "--out", tmp_path / "r", "--device", "cpu", "--seq-len", "16")
    assert r.returncode == 2 and "aux_weight must be a number" in r.stderr and "Traceback" not in r.stderr
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"model": str(tiny_model_dir), "out": str(tmp_path / "r"), "save_every": "5"}))
    r = _cli("train", "--config", cfg)
    assert r.returncode == 2 and "'save_every' must be int" in r.stderr


def test_data_filter_with_no_complete_sequence_is_an_error(tmp_path):
    data = _write_ids(tmp_path / "short.jsonl", [[i % 50 for i in range(24)]] * 5)  # 120 tokens in all
    out = tmp_path / "filtered"
    r = _cli("data", "filter", "--reference", data, "--target", data, "--out", out)
    assert r.returncode == 2 and "--seq-len" in r.stderr and "1024" in r.stderr
    assert not out.exists()


# --------------------------------------------------------------------------------------- jobs and bad input
def test_jobs_list_root_file_and_absurd_status_numbers(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    r = _cli("list", "--root", f, module="jobs")
    assert r.returncode == 1 and "is a file" in r.stderr and "Traceback" not in r.stderr
    root = tmp_path / "runs"
    (root / "weird").mkdir(parents=True)
    (root / "weird" / "status.json").write_text(json.dumps({"state": "failed", "step": 1e300, "started": 1e300,
                                                            "updated": -5, "max_steps": "x", "reason": "r"}))
    r = _cli("list", "--root", root, module="jobs")
    assert r.returncode == 0 and "weird" in r.stdout and "Traceback" not in r.stderr
    from jobs import list_runs
    from pages._common.ui_data.runs import runs_frame

    frame = runs_frame(list_runs(root))
    assert list(frame["name"]) == ["weird"]


def test_ghost_run_is_listed_deletable_and_resumable(tiny_model_dir, tiny_dataset, tmp_path):
    from jobs import delete_run, list_runs

    root = tmp_path / "runs"
    ghost = root / "ghost"
    ghost.mkdir(parents=True)
    TrainConfig(model=str(tiny_model_dir), out=str(ghost)).save(ghost / "config.yaml")  # died before status.json
    [st] = list_runs(root)
    assert st.name == "ghost" and st.state == "failed" and "start-up" in st.reason
    delete_run(ghost)
    assert not ghost.exists()
    # a job cancelled during start-up (request.yaml, no config.yaml) resumes by starting afresh
    run = root / "early"
    run.mkdir()
    import yaml

    req = {"model": str(tiny_model_dir), "dataset": str(tiny_dataset), "schedule": "auto", "device": "cpu",
           "out": str(run), "overrides": SMALL}
    (run / "request.yaml").write_text(yaml.safe_dump(req))
    (run / "status.json").write_text(json.dumps({"state": "cancelled", "step": 0, "reason": "cancelled",
                                                 "updated": time.time(), "started": time.time()}))
    r = _cli("train", "--config", run / "request.yaml", "--out", run, "--resume")
    assert r.returncode == 0, r.stderr
    assert "starting it afresh" in r.stdout and len(_steps(run)) == 10


def test_a_trainer_that_dies_in_start_up_leaves_a_listed_run_or_nothing(tiny_model_dir, tiny_dataset, tmp_path):
    from jobs import delete_run, list_runs

    root = tmp_path / "runs"
    r = _cli("train", "--model", tmp_path / "nope", "--dataset", "x", "--out", root / "a", "--device", "cpu")
    assert r.returncode == 2 and not (root / "a").exists()
    # killed (os._exit stands for kill -9) after config.yaml was written, before the first status update
    code = textwrap.dedent(f"""
        import os, sys
        import lnfree_core.train as T
        from lnfree_core.config import TrainConfig
        T.RunLog = lambda *a, **k: os._exit(9)
        T.train(TrainConfig(model={str(tiny_model_dir)!r}, dataset={str(tiny_dataset)!r}, schedule="auto",
                            out={str(root / "b")!r}, device="cpu", overrides={SMALL!r}))
    """)
    r = subprocess.run([sys.executable, "-c", code], env=ENV, cwd=str(REPO), capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 9 and (root / "b" / "config.yaml").exists()
    [st] = list_runs(root)
    assert (st.name, st.state) == ("b", "failed") and "died" in st.reason
    delete_run(root / "b")
    assert not (root / "b").exists()


# ----------------------------------------------------------------------------------------------- resume
def test_resume_refuses_flags_that_change_the_run_and_applies_safe_ones(finished_run):
    base = ["train", "--out", finished_run, "--resume"]
    r = _cli(*base, "--lr", "0.5", "--max-steps", "99")
    assert r.returncode == 2 and "lr (saved 0.003, given 0.5)" in r.stderr and "max_steps" in r.stderr
    r = _cli(*base, "--max-steps", "10", "--save-every", "2", "--device", "cpu")
    assert r.returncode == 0, r.stderr
    assert "changed on resume: save_every: 5 -> 2" in r.stdout
    assert TrainConfig.load(finished_run / "config.yaml").save_every == 2


def test_trainer_repairs_a_half_written_metrics_line(tiny_model_dir, tiny_dataset, tmp_path):
    run = tmp_path / "run"
    train(_cfg(tiny_model_dir, tiny_dataset, run, overrides={"max_steps": 10}, save_every=5))
    rows = (run / "metrics.jsonl").read_text().splitlines(keepends=True)
    # the trainer was killed after step 7 and in the middle of writing step 8's line
    keep = [r for r in rows if json.loads(r).get("step", 0) <= 7 or json.loads(r).get("kind") == "removal"
            and json.loads(r)["step"] <= 7]
    (run / "metrics.jsonl").write_text("".join(keep) + rows[-1][:25])
    import shutil

    shutil.rmtree(run / CKPT_DIR / "step_00000010")
    (run / "status.json").write_text(json.dumps({"state": "failed", "step": 7}))
    train(TrainConfig(model="(from config.yaml)", out=str(run)), resume=True)
    events = [r for r in read_jsonl(run / "metrics.jsonl") if r.get("kind") == "resumed"]
    assert len(events) == 1 and "repaired a half-written last line" in events[0]["message"]
    from jobs import merge_resumed

    steps = [r["step"] for r in merge_resumed(read_jsonl(run / "metrics.jsonl")) if r["type"] == "step"]
    assert steps == list(range(1, 11))


# ------------------------------------------------------------------------------------------------ model card
def test_model_card_provenance(finished_run, tmp_path):
    out = tmp_path / "export"
    export_model(str(finished_run), out)
    card = (out / "README.md").read_text()
    front = card.split("---")[1]
    assert "base_model" not in front  # the base was a local folder: never published
    assert str(tmp_path) not in card
    from lnfree_core.models import load_model
    from lnfree_core.method.surgery import fakeln_modules

    fake = load_model(str(finished_run)).model
    for name, m in fakeln_modules(fake).items():
        if name.startswith("mlp."):
            layer = int(name.split(".")[1])
            row = next(line for line in card.splitlines() if line.startswith(f"| {layer} |"))
            assert f"{float(m.sigma):.6g}" in row
    assert "W_V is multiplied by ρ = σ̄_qk / σ̄_v" in card


def test_model_card_base_model_is_a_hub_id_and_ce_table_from_the_cache(finished_run, tmp_path, tiny_dataset):
    from lnfree_core.analysis.cached import DataSpec, ce_eval
    from lnfree_core.model_card import hub_base_model, render_model_card

    assert hub_base_model("openai-community/gpt2") == "openai-community/gpt2"
    for local in (str(tmp_path), "/abs/model", "./rel", "demo:original", "runs/x@5", "a/b/c"):
        assert hub_base_model(local) is None
    card = render_model_card(repo_name="u/m", base_model="gpt2", mode="ln-free", schedule=None)
    assert "base_model:\n- gpt2" in card
    cache = tmp_path / "cache"
    res = ce_eval(str(finished_run), DataSpec(str(tiny_dataset), split="train", n=4, seq_len=16), cache_dir=cache,
                  device="cpu")
    out = tmp_path / "export"
    export_model(str(finished_run), out, cache_dir=cache)
    card = (out / "README.md").read_text()
    assert "## Evaluation (cross-entropy of this checkpoint)" in card
    assert f"{res.summary.mean:.4f}" in card and str(tmp_path) not in card


def test_partly_ln_free_export_gives_the_right_advice_once(tiny_model_dir, tiny_dataset, tmp_path):
    run = tmp_path / "run"
    train(_cfg(tiny_model_dir, tiny_dataset, run, save_every=2, keep_checkpoints=10))
    for allow in (False, True):
        with pytest.raises(ExportError) as e:
            export_model(f"{run}@2", tmp_path / "e", allow_live=allow)
        assert "partly LN-free" in str(e.value) and "Pass allow_live" not in str(e.value)
