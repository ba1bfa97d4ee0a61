"""The step kept on the device: deferred host reads (log_every), the device-side skip of a non-finite
update, data prefetch, and the throughput/MFU fields of metrics.jsonl."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import lnfree_core.train as tr
from _train_crash import train_crashing_at
from lnfree_core.config import TrainConfig
from lnfree_core.rundir import read_jsonl
from lnfree_core.step_sync import Prefetcher, supports_found_inf
from lnfree_core.throughput import flops_per_token, matmul_params, peak_bf16_tflops

SMALL = dict(max_steps=20, micro_batch_size=4, grad_accum_steps=2, seq_len=32, warmup_steps=2, lr=3e-3, min_lr=1e-3)


def _cfg(model, data, out, **kw):
    return TrainConfig(model=str(model), dataset=str(data), schedule="auto", out=str(out),
                       overrides={**SMALL, **kw.pop("overrides", {})}, save_every=kw.pop("save_every", 4), **kw)


def _steps(run):
    return [r for r in read_jsonl(Path(run) / "metrics.jsonl") if r["type"] == "step"]


@pytest.fixture
def fused_adamw(monkeypatch):
    """The trainer's optimizer as fused AdamW (what CUDA gets): its update can be skipped on the device."""
    real = tr.make_optimizer

    def fused(*a, **kw):
        opt = real(*a, **kw)
        for g in opt.param_groups:
            g["fused"] = True
        opt._step_supports_amp_scaling = True  # what AdamW(fused=True) sets
        assert supports_found_inf(opt)
        return opt

    monkeypatch.setattr(tr, "make_optimizer", fused)


def test_deferred_reads_log_every_step_and_resume_exactly(fused_adamw, tiny_model_dir, tiny_dataset, tmp_path):
    full = tmp_path / "full"
    res = tr.train(_cfg(tiny_model_dir, tiny_dataset, full, log_every=3))
    assert res.state == "finished" and res.step == 20
    rows = _steps(full)
    assert [r["step"] for r in rows] == list(range(1, 21))  # a row per step, though read every 3 steps
    assert all(np.isfinite(r["loss"]) and r["tokens_per_s"] > 0 and r["tflops"] > 0 for r in rows)
    assert all(r["mfu"] is None for r in rows)  # a CPU has no bf16 peak in the table
    assert rows[-1]["eta_s"] == 0
    # The same run crashed at step 13 (last checkpoint at 12) and resumed repeats it exactly.
    part = tmp_path / "part"
    train_crashing_at(_cfg(tiny_model_dir, tiny_dataset, part, log_every=3), step=13)
    assert tr.train(TrainConfig(model="x", out=str(part)), resume=True).state == "finished"
    lf = [r["loss"] for r in rows]
    lp = {r["step"]: r["loss"] for r in _steps(part)}  # resumed rows replace the crashed run's last ones
    assert [lp[s] for s in range(1, 21)] == pytest.approx(lf, rel=1e-6, abs=1e-7)


def _poisoned_run(tmp_path, name, model, data, monkeypatch, **kw):
    real = tr.aux_loss
    n = {"calls": 0}

    def poisoned(sigma, ids, eot, w):
        n["calls"] += 1
        out = real(sigma, ids, eot, w)
        return out * float("nan") if n["calls"] >= 9 else out  # micro-batch 9 = step 5 (2 per step)

    monkeypatch.setattr(tr, "aux_loss", poisoned)
    res = tr.train(_cfg(model, data, tmp_path / name, **kw))
    monkeypatch.setattr(tr, "aux_loss", real)
    return res


def test_deferred_nonfinite_step_is_skipped_on_the_device_and_stops_like_the_immediate_check(
        tiny_model_dir, tiny_dataset, tmp_path, monkeypatch):
    now = _poisoned_run(tmp_path, "now", tiny_model_dir, tiny_dataset, monkeypatch)
    real = tr.make_optimizer
    opts = []

    def fused(*a, **kw):
        opt = real(*a, **kw)
        for g in opt.param_groups:
            g["fused"] = True
        opt._step_supports_amp_scaling = True  # what AdamW(fused=True) sets
        opts.append(opt)
        return opt

    monkeypatch.setattr(tr, "make_optimizer", fused)
    later = _poisoned_run(tmp_path, "later", tiny_model_dir, tiny_dataset, monkeypatch, log_every=50, save_every=50)
    for res in (now, later):
        assert res.state == "failed" and res.step == 4 and "non-finite" in res.reason and "step 5" in res.reason
    run = tmp_path / "later"
    assert json.loads((run / "status.json").read_text())["state"] == "failed"
    assert [r["step"] for r in _steps(run)] == [1, 2, 3, 4]  # nothing logged from the bad step on
    ev = [r for r in read_jsonl(run / "metrics.jsonl") if r.get("kind") == "throughput"]
    assert ev[0]["host_reads_every"] == 50  # the deferred path ran (the immediate one reads every step)
    # Steps 5.. ran on the device but every update was skipped: AdamW took exactly 4 steps.
    state_steps = {float(s["step"]) for s in opts[0].state.values()}
    assert state_steps == {4.0}


def test_prefetcher_yields_the_stream_in_order_and_reports_the_consumed_position():
    class Source:
        def __init__(self):
            self.epoch, self.pos = 0, 0

        def next(self):
            if self.pos == 5:
                raise ValueError("dataset ended")
            self.pos += 1
            return np.full((2, 3), self.pos)

    feed = Prefetcher(Source(), depth=2)
    try:
        for i in range(1, 6):
            x = feed.next()
            assert x.dtype == torch.int64 and int(x[0, 0]) == i and feed.pos == i  # not the read-ahead position
        with pytest.raises(ValueError, match="dataset ended"):
            feed.next()
    finally:
        feed.close()


def test_flops_per_token_of_gpt2_small_and_the_peak_table():
    from transformers import GPT2Config, GPT2LMHeadModel

    with torch.device("meta"):
        model = GPT2LMHeadModel(GPT2Config())
    V, d, L = 50257, 768, 12
    n = V * d + L * (12 * d * d + 13 * d) + 2 * d  # W_E (tied W_U) + blocks + ln_f; no position embeddings
    assert matmul_params(model) == n == 123_653_376
    assert flops_per_token(n, L, d, 1024) == pytest.approx(0.855e9, rel=1e-3)  # the 0.86 GFLOP of the notes
    assert peak_bf16_tflops("NVIDIA H100 80GB HBM3") == pytest.approx(989.4)
    assert peak_bf16_tflops("NVIDIA H100 PCIe") == 756.0
    assert peak_bf16_tflops("NVIDIA H200") == pytest.approx(989.4)
    assert peak_bf16_tflops("NVIDIA A100-SXM4-80GB") == 312.0
    assert peak_bf16_tflops("NVIDIA L4") == 121.0 and peak_bf16_tflops("NVIDIA L40S") == pytest.approx(362.1)
    assert peak_bf16_tflops("NVIDIA A10G") == 70.0 and peak_bf16_tflops("NVIDIA GeForce RTX 4090") == 165.2
    assert peak_bf16_tflops("Tesla T4") is None and peak_bf16_tflops(None) is None
