"""The trainer on tiny models: a whole schedule, resume determinism, guards, export, torchrun (gloo)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from _train_crash import train_crashing_at
from lnfree_core.config import ConfigError, TrainConfig
from lnfree_core.export import ExportError, export_model
from lnfree_core.models import load_model
from lnfree_core.rundir import read_jsonl
from lnfree_core.method.surgery import fakeln_modules, live_blocks
from lnfree_core.train import train

REPO = Path(__file__).resolve().parents[1]
SMALL = dict(max_steps=24, micro_batch_size=4, grad_accum_steps=2, seq_len=32, warmup_steps=2, lr=3e-3, min_lr=1e-3)


def _cfg(model, data, out, **kw):
    over = {**SMALL, **kw.pop("overrides", {})}
    return TrainConfig(model=str(model), dataset=str(data), schedule=kw.pop("schedule", "auto"), out=str(out),
                       overrides=over, save_every=kw.pop("save_every", 5), **kw)


def _losses(run):
    return [r["loss"] for r in read_jsonl(Path(run) / "metrics.jsonl") if r["type"] == "step"]


def test_whole_tiny_schedule_leaves_no_live_ln_and_logs_everything(tiny_model_dir, tiny_dataset, tmp_path):
    run = tmp_path / "run"
    res = train(_cfg(tiny_model_dir, tiny_dataset, run))
    assert res.state == "finished" and res.step == 24
    rows = read_jsonl(run / "metrics.jsonl")
    steps = [r for r in rows if r["type"] == "step"]
    removals = [r for r in rows if r["type"] == "event" and r["kind"] == "removal"]
    assert [r["step"] for r in steps] == list(range(1, 25))
    assert len(removals) == 3 * 2 + 1
    assert all(set(r) >= {"loss", "aux_loss", "lr", "grad_norm", "tokens_per_s", "sigma"} for r in steps)
    assert set(steps[-1]["sigma"]) == {"mlp.0", "mlp.1", "qk.0", "qk.1", "v.0", "v.1", "f"}
    # a removal freezes the sigma tracked up to then: later sigma lines keep that value
    for ev in removals:
        name = "f" if ev["block"] == "f" else f"{ev['block']}.{ev['layer']}"
        later = [s["sigma"][name] for s in steps if s["step"] > ev["step"]]
        assert all(v == pytest.approx(ev["sigma"], rel=1e-6) for v in later)
        before = [s["sigma"][name] for s in steps if s["step"] == ev["step"]]
        assert before and before[0] == pytest.approx(ev["sigma"], rel=1e-6)
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "finished" and status["step"] == 24
    loaded = load_model(str(run))
    assert loaded.ln_free and live_blocks(loaded.model) == []
    saved = TrainConfig.load(run / "config.yaml")
    assert isinstance(saved.schedule, dict) and saved.schedule["hparams"]["max_steps"] == 24


def test_run_directory_is_never_overwritten(tiny_model_dir, tiny_dataset, tmp_path):
    run = tmp_path / "run"
    train(_cfg(tiny_model_dir, tiny_dataset, run, overrides={"max_steps": 20}))
    with pytest.raises(ConfigError, match="already holds a run"):
        train(_cfg(tiny_model_dir, tiny_dataset, run))


def test_resume_gives_the_same_losses_as_an_uninterrupted_run(tiny_model_dir, tiny_dataset, tmp_path):
    full = tmp_path / "full"
    train(_cfg(tiny_model_dir, tiny_dataset, full, overrides={"max_steps": 20}, save_every=4))
    # The same run, crashed after 13 steps (last checkpoint: step 12), then resumed to the end.
    part = tmp_path / "part"
    cfg = _cfg(tiny_model_dir, tiny_dataset, part, overrides={"max_steps": 20}, save_every=4)
    cfg_stop = TrainConfig(**{**cfg.to_dict(), "overrides": {**cfg.overrides}})
    train_crashing_at(cfg_stop, step=13)
    assert json.loads((part / "status.json").read_text())["state"] == "failed"
    assert _losses(part) == pytest.approx(_losses(full)[:13], rel=1e-6)  # same seed, same data: same history
    res = train(TrainConfig(model="x", out=str(part)), resume=True)
    assert res.state == "finished"
    lp, lf = _losses(part), _losses(full)
    # steps 13..20 after resuming from the step-12 checkpoint repeat the uninterrupted run exactly
    resumed = lp[13:]
    assert len(resumed) == 8
    assert resumed == pytest.approx(lf[12:], rel=1e-6, abs=1e-7)
    kinds = [r.get("kind") for r in read_jsonl(part / "metrics.jsonl") if r["type"] == "event"]
    assert "resumed" in kinds


def test_nonfinite_loss_stops_cleanly_without_training_on_nan(tiny_model_dir, tiny_dataset, tmp_path):
    run = tmp_path / "nan"
    import lnfree_core.train as tr

    real = tr.aux_loss

    def poisoned(sigma, ids, eot, w):
        out = real(sigma, ids, eot, w)
        return out * float("nan") if tr_step["n"] >= 6 else out

    tr_step = {"n": 0}

    def counting(*a):
        tr_step["n"] += 1
        return poisoned(*a)

    tr.aux_loss = counting
    try:
        res = train(_cfg(tiny_model_dir, tiny_dataset, run))
    finally:
        tr.aux_loss = real
    assert res.state == "failed" and "non-finite" in res.reason and "gaps" in res.reason
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "failed" and "non-finite" in status["reason"]
    ev = [r for r in read_jsonl(run / "metrics.jsonl") if r.get("kind") == "nonfinite_loss"]
    assert len(ev) == 1
    assert all(r["loss"] == r["loss"] for r in read_jsonl(run / "metrics.jsonl") if r["type"] == "step")


def test_vanilla_mode_keeps_layernorm_and_same_data_and_lr(tiny_model_dir, tiny_dataset, tmp_path):
    v = tmp_path / "vanilla"
    train(_cfg(tiny_model_dir, tiny_dataset, v, mode="vanilla", overrides={"max_steps": 20}))
    rows = [r for r in read_jsonl(v / "metrics.jsonl") if r["type"] == "step"]
    assert len(rows) == 20 and all(r["aux_loss"] is None for r in rows)
    assert not [r for r in read_jsonl(v / "metrics.jsonl") if r.get("kind") == "removal"]
    loaded = load_model(str(v))
    assert not loaded.ln_free and not fakeln_modules(loaded.model)
    with pytest.raises(ExportError, match="live LayerNorms"):
        export_model(str(v), tmp_path / "exp")
    export_model(str(v), tmp_path / "exp", allow_live=True)


def test_export_round_trip_through_plain_transformers(tiny_model_dir, tiny_dataset, tmp_path):
    from transformers import GPT2LMHeadModel

    run = tmp_path / "run"
    train(_cfg(tiny_model_dir, tiny_dataset, run))
    out = tmp_path / "export"
    res = export_model(str(run), out)
    assert res.ln_free and res.logit_max_abs_diff <= 1e-4
    assert (out / "model.safetensors").exists() and (out / "README.md").exists()
    assert (out / "tokenizer.json").exists() or (out / "vocab.json").exists()
    published_meta = json.loads((out / "lnfree_export.json").read_text())
    assert str(tmp_path) not in json.dumps(published_meta)  # no local paths in a file that is published
    assert published_meta["ln_free"] and published_meta["checkpoint"].startswith("step_")
    plain = GPT2LMHeadModel.from_pretrained(str(out)).eval()  # no lnfree code involved
    assert plain.config.layer_norm_epsilon == 1e12
    fake = load_model(str(run)).model
    x = torch.randint(0, 127, (3, 40))
    with torch.no_grad():
        diff = (plain(x).logits - fake(x).logits).abs().max().item()
    assert diff <= 1e-4
    # sigma_qk != sigma_v in this run (their paths were removed at different steps)
    mods = fakeln_modules(fake)
    assert float(mods["qk.0"].sigma) != float(mods["v.0"].sigma)
    # and the Hub-style export loads back into lnfree as LN-free
    back = load_model(str(out))
    assert back.ln_free and back.info["converted_from"]
    with torch.no_grad():
        assert (back.model(x).logits - fake(x).logits).abs().max().item() <= 1e-4
    with pytest.raises(ExportError, match="not empty"):
        export_model(str(run), out)


def test_partly_removed_model_refuses_export(tiny_model_dir, tiny_dataset, tmp_path):
    run = tmp_path / "run"
    train(_cfg(tiny_model_dir, tiny_dataset, run, overrides={"max_steps": 24}, save_every=5, keep_checkpoints=10))
    partial = load_model(f"{run}@5")  # auto schedule: some blocks removed by step 5, not all
    assert 0 < partial.info["n_removed"] < partial.info["n_blocks"]
    with pytest.raises(ExportError, match="partly LN-free"):
        export_model(f"{run}@5", tmp_path / "e", allow_live=True)
    with pytest.raises(ExportError, match="live LayerNorms"):
        export_model(f"{run}@5", tmp_path / "e")


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed not built")
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_process_torchrun_gloo(strategy, tiny_model_dir, tiny_dataset, tmp_path):
    run = tmp_path / strategy
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "lnfree_core", "train", "--model", str(tiny_model_dir), "--dataset", str(tiny_dataset),
           "--schedule", "auto", "--out", str(run), "--max-steps", "20", "--batch-size", "2", "--grad-accum", "2",
           "--seq-len", "32", "--device", "cpu", "--save-every", "10", "--distributed", strategy]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=str(REPO))
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [r for r in read_jsonl(run / "metrics.jsonl") if r["type"] == "step"]
    assert len(rows) == 20
    assert rows[-1]["tokens"] == 20 * 2 * 2 * 32 * 2  # both ranks' tokens count
    loaded = load_model(str(run))  # the checkpoint holds full (gathered) weights, loadable anywhere
    assert loaded.ln_free
    assert TrainConfig.load(run / "config.yaml").distributed == strategy
    # The global micro-batch of 2 ranks x 2 = one process with batch 4: same data order, same first loss
    single = tmp_path / "single"
    train(_cfg(tiny_model_dir, tiny_dataset, single, overrides={"max_steps": 20, "micro_batch_size": 4}, save_every=10))
    assert rows[0]["loss"] == pytest.approx(_losses(single)[0], rel=1e-5)


def test_bad_inputs_give_clear_errors_without_tracebacks(tiny_model_dir, tiny_dataset, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}

    def run(*args):
        return subprocess.run([sys.executable, "-m", "lnfree_core", "train", *args], env=env, capture_output=True,
                              text=True, timeout=120, cwd=str(tmp_path))

    missing = run("--model", str(tmp_path / "nope"), "--dataset", str(tiny_dataset), "--out", str(tmp_path / "r1"))
    assert missing.returncode == 2 and "cannot set up the run" in missing.stderr and "Traceback" not in missing.stderr
    layers = run("--model", str(tiny_model_dir), "--dataset", str(tiny_dataset), "--schedule", "gpt2",
                 "--out", str(tmp_path / "r2"))
    assert layers.returncode == 2 and "12 layers but the model has 2" in layers.stderr
    data = run("--model", str(tiny_model_dir), "--dataset", "no-such-dataset", "--schedule", "auto",
               "--max-steps", "30", "--out", str(tmp_path / "r3"))
    assert data.returncode == 2 and "no-such-dataset" in data.stderr and "Traceback" not in data.stderr
    # a run directory prepared by the job runner gets the reason in status.json
    prepared = tmp_path / "r4"
    prepared.mkdir()
    run("--model", str(tmp_path / "nope"), "--dataset", str(tiny_dataset), "--out", str(prepared))
    assert json.loads((prepared / "status.json").read_text())["state"] == "failed"


def test_weight_decay_only_on_matrices_not_on_fakeln_or_layernorm_gamma():
    from _tiny import tiny_model

    from lnfree_core.optim import param_groups
    from lnfree_core.method.surgery import make_removable

    for surgery in (False, True):
        m = tiny_model()
        if surgery:
            make_removable(m)
        decay, no_decay = param_groups(m, 0.01)
        assert decay["weight_decay"] == 0.01 and no_decay["weight_decay"] == 0.0
        ids_no = {id(p) for p in no_decay["params"]}
        for mod in m.modules():
            if hasattr(mod, "eps") and hasattr(mod, "weight"):  # LayerNorm or FakeLayerNorm
                assert id(mod.weight) in ids_no and id(mod.bias) in ids_no
        assert all(p.dim() >= 2 for p in decay["params"])
        n_params = len({id(p) for p in m.parameters()})
        assert len(decay["params"]) + len(no_decay["params"]) == n_params  # shared gamma counted once


def _worker_pid(out: Path, rank: int) -> int | None:
    """The pid of the torchrun worker of `rank` training into `out` (read from /proc)."""
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().split(b"\0")
            env = (d / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if str(out).encode() in cmd and b"lnfree_core" in cmd and f"RANK={rank}".encode() in env \
                and b"torch.distributed.run" not in b" ".join(cmd):
            return int(d.name)
    return None


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs /proc")
def test_a_signal_to_one_rank_cancels_every_rank_after_the_same_step(tiny_model_dir, tiny_dataset, tmp_path):
    import signal
    import time

    run = tmp_path / "sig"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "lnfree_core", "train", "--model", str(tiny_model_dir), "--dataset", str(tiny_dataset),
           "--schedule", "auto", "--out", str(run), "--max-steps", "400", "--batch-size", "2", "--grad-accum", "1",
           "--seq-len", "32", "--device", "cpu", "--save-every", "1000", "--distributed", "fsdp"]
    proc = subprocess.Popen(cmd, env=env, cwd=str(REPO), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            steps = [r for r in read_jsonl(run / "metrics.jsonl") if r["type"] == "step"] if run.exists() else []
            if len(steps) >= 3:
                break
            time.sleep(0.2)
        pid = _worker_pid(run, 1)
        assert pid is not None
        os.kill(pid, signal.SIGTERM)  # only rank 1 is told to stop
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "cancelled", (status, err[-2000:])
    ckpts = sorted((run / "checkpoints").iterdir())
    assert ckpts and int(ckpts[-1].name.split("_")[1]) == status["step"]  # the collective checkpoint was written


def test_dropout_override_is_applied_and_recorded(tmp_path, tiny_dataset):
    from _tiny import tiny_model

    model_dir = tmp_path / "drop"
    tiny_model(dropout=0.1).save_pretrained(str(model_dir))
    run = tmp_path / "run"
    train(_cfg(model_dir, tiny_dataset, run, overrides={"max_steps": 20}, dropout=0.0))
    assert TrainConfig.load(run / "config.yaml").dropout == 0.0
    loaded = load_model(str(run))
    assert loaded.model.config.resid_pdrop == 0.0 and loaded.model.config.attn_pdrop == 0.0
    with pytest.raises(ConfigError, match="dropout must be in"):
        _cfg(model_dir, tiny_dataset, tmp_path / "bad", dropout=1.5).validate()
