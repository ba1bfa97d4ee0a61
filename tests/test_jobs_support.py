"""Shared helpers for the jobs/ tests: a fake trainer that follows docs/CONTRACTS.md, and waiters.

Holds no tests itself. The other tests load it by path (see load_support in each), so they work
whatever pytest's import mode is.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

FAKE_TRAINER = r'''
"""Fake `lnfree_core train`: status.json, metrics.jsonl, checkpoints as marker dirs, SIGTERM, --resume."""
import argparse, json, os, signal, sys, time
from pathlib import Path
import yaml

p = argparse.ArgumentParser()
p.add_argument("cmd")
p.add_argument("--config")
p.add_argument("--out", required=True)
p.add_argument("--resume", action="store_true")
p.add_argument("--max-steps", type=int)
a = p.parse_args()
cfg = (yaml.safe_load(open(a.config)) or {}) if a.config else {}
if a.cmd != "train" or cfg.get("bad_config"):
    print("error: bad config (fake trainer)", flush=True)
    sys.exit(2)
out = Path(a.out)
max_steps = a.max_steps or cfg.get("max_steps", 10)
step_time = cfg.get("step_time", 0.02)
every = cfg.get("checkpoint_every", 5)
stop = []
signal.signal(signal.SIGTERM, signal.SIG_IGN if cfg.get("ignore_sigterm") else lambda *_: stop.append(1))
time.sleep(cfg.get("startup_delay", 0))
old = json.loads((out / "status.json").read_text()) if (out / "status.json").exists() else {}
started = old.get("started", time.time())
metrics = open(out / "metrics.jsonl", "a") if os.environ.get("RANK", "0") == "0" else None

rank = int(os.environ.get("RANK", "0"))  # under torch.distributed.run only rank 0 writes


def emit(row):
    if rank:
        return
    metrics.write(json.dumps({**row, "time": time.time()}) + "\n")
    metrics.flush()

def status(state, step, reason=None):
    if rank:
        return
    tmp = out / ".status.json.tmp"
    tmp.write_text(json.dumps({"state": state, "step": step, "max_steps": max_steps, "pid": os.getpid(),
                               "reason": reason, "updated": time.time(), "started": started}))
    os.replace(tmp, out / "status.json")

def checkpoint(step):
    if rank:
        return
    final = out / "checkpoints" / f"step_{step:08d}"
    if final.exists():
        return
    tmp = out / "checkpoints" / f".tmp_step_{step:08d}"
    tmp.mkdir(parents=True)
    (tmp / "model.safetensors").write_bytes(b"fake")
    (tmp / "trainer_state.json").write_text(json.dumps({"step": step}))
    os.rename(tmp, final)
    emit({"type": "event", "kind": "checkpoint", "step": step, "message": f"saved {final.name}"})

step = 0
if a.resume:
    done = sorted(d for d in (out / "checkpoints").glob("step_*") if (d / "trainer_state.json").exists())
    step = json.loads((done[-1] / "trainer_state.json").read_text())["step"] if done else 0
    emit({"type": "event", "kind": "resumed", "step": step, "message": f"resumed from step {step}"})
status("running", step)
print(f"fake trainer: training from step {step} to {max_steps}", flush=True)
while step < max_steps:
    if stop:
        checkpoint(step)
        status("cancelled", step, "cancelled by SIGTERM")
        sys.exit(143)
    time.sleep(step_time)
    step += 1
    if step == cfg.get("fail_at"):
        status("failed", step - 1, f"loss became NaN at step {step}")
        print("fake trainer: failing", flush=True)
        sys.exit(1)
    emit({"type": "step", "step": step, "loss": 10.0 / step, "aux_loss": None, "lr": 1e-4, "grad_norm": 1.0,
          "tokens_per_s": 1000.0, "tokens": 1024 * step, "sigma": {"f": 1.0}})
    if step % every == 0:
        checkpoint(step)
    status("running", step)
status("finished", step)
print("fake trainer: finished", flush=True)
'''


@pytest.fixture
def fake(tmp_path: Path) -> tuple[str, ...]:
    """The `trainer` argument that runs the fake trainer: (path of the script,)."""
    path = tmp_path / "fake_trainer.py"
    path.write_text(FAKE_TRAINER)
    return (str(path),)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A fresh runs root."""
    return tmp_path / "runs"


def wait_for(predicate, timeout: float = 15.0, what: str = "condition"):
    """Poll `predicate` until it returns something truthy; fail the test after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def wait_state(run_dir, states, timeout: float = 15.0):
    """Wait until run_status(run_dir).state is in `states` and its process is gone; return the status."""
    from jobs import run_status

    states = (states,) if isinstance(states, str) else tuple(states)
    return wait_for(
        lambda: (s := run_status(run_dir)).state in states and not s.alive and s,
        timeout,
        f"state in {states}",
    )


def step_rows(run_dir) -> list[dict]:
    """All step rows of metrics.jsonl, in file order."""
    from jobs import read_metrics

    return [r for r in read_metrics(run_dir)[0] if r.get("type") == "step"]


def wait_steps(run_dir, n: int, timeout: float = 15.0) -> int:
    """Wait until at least `n` step rows are written; return how many there are."""
    return wait_for(lambda: len(step_rows(run_dir)) >= n and len(step_rows(run_dir)), timeout, f"{n} steps")


def checkpoint_steps(run_dir) -> list[int]:
    """Steps of the complete checkpoints in RUN_DIR/checkpoints."""
    ck = Path(run_dir) / "checkpoints"
    return sorted(int(d.name[5:]) for d in ck.glob("step_*") if (d / "trainer_state.json").exists())


def fresh_status(run_dir) -> dict:
    """run_status computed by a brand-new Python process (nothing shared in memory)."""
    import subprocess

    code = "import json, sys, jobs; print(json.dumps(jobs.run_status(sys.argv[1]).to_dict()))"
    out = subprocess.run([sys.executable, "-c", code, str(run_dir)], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parent.parent)
    return json.loads(out.stdout)
