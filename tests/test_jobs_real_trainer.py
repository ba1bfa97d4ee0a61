"""jobs/ against the real trainer (`python -m lnfree_core train`) on a tiny GPT-2, on CPU."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parent.parent)]
import test_jobs_support as S  # noqa: E402

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("lnfree_core.train")

from jobs import cancel_run, read_metrics, resume_run, run_status, start_run  # noqa: E402

root = S.root


@pytest.fixture
def tiny_config(tmp_path) -> dict:
    """A TrainConfig dict: a 2-layer GPT-2 saved locally and a jsonl of token ids (no downloads)."""
    import numpy as np
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    cfg = GPT2Config(n_layer=2, n_embd=32, n_head=4, vocab_size=128, n_positions=64, bos_token_id=127,
                     eos_token_id=127)
    GPT2LMHeadModel(cfg).save_pretrained(str(tmp_path / "model"))
    rng = np.random.default_rng(0)
    with open(tmp_path / "tokens.jsonl", "w") as f:
        for _ in range(128):
            f.write(json.dumps({"input_ids": [int(x) for x in rng.integers(0, 127, 64)]}) + "\n")
    return {"model": str(tmp_path / "model"), "dataset": str(tmp_path / "tokens.jsonl"), "schedule": "auto",
            "device": "cpu", "save_every": 100,
            "overrides": {"max_steps": 400, "micro_batch_size": 2, "grad_accum_steps": 1, "seq_len": 32,
                          "warmup_steps": 2}}


def test_real_trainer_start_and_cancel(root, tiny_config):
    h = start_run(root, "real", tiny_config)
    assert run_status(h.run_dir).state in ("queued", "running")
    S.wait_steps(h.run_dir, 3, timeout=120)
    st = run_status(h.run_dir)
    assert st.state == "running" and st.max_steps == 400 and st.last_metrics["type"] == "step"
    st = cancel_run(h.run_dir, timeout=60)
    assert st.state == "cancelled" and "SIGTERM" in st.reason and not st.alive
    assert h.process.wait(10) == 143
    assert (h.run_dir / "checkpoints" / f"step_{st.step:08d}").is_dir()  # checkpointed on the way out


@pytest.mark.slow
def test_real_trainer_resume_after_kill(root, tiny_config):
    import os
    import signal

    tiny_config["overrides"]["max_steps"] = 30
    tiny_config["save_every"] = 5
    h = start_run(root, "real", tiny_config)
    S.wait_steps(h.run_dir, 12, timeout=120)
    os.killpg(h.pgid, signal.SIGKILL)
    h.process.wait(10)
    assert run_status(h.run_dir).state == "failed"
    resume_run(h.run_dir).wait(180)
    assert run_status(h.run_dir).state == "finished"
    from jobs import merge_resumed

    merged = [r["step"] for r in merge_resumed(read_metrics(h.run_dir)[0]) if r["type"] == "step"]
    assert merged == list(range(1, 31))
