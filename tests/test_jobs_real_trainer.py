"""jobs/ against the real trainer (`python -m lnfree_core train`) on a tiny GPT-2, on CPU."""

from __future__ import annotations

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
def tiny_config(tiny_model_dir, tiny_dataset) -> dict:
    """A TrainConfig dict on the shared tiny GPT-2 and token-id jsonl (tests/conftest.py)."""
    return {"model": str(tiny_model_dir), "dataset": str(tiny_dataset), "schedule": "auto",
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
