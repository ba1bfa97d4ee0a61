"""Fault injection on a real trainer: what survives kill -9, a full disk, a corrupt checkpoint,
concurrent trainers and a cancel during a checkpoint. Prints one line per scenario (the README's
"Reliability" section quotes them).

    python bench/faults.py [--work DIR] [--steps 30]

Each scenario trains a tiny random GPT-2 (built here, no downloads) on token data made here, with
the real CLI in subprocesses, and compares the losses of the interrupted-and-resumed run with an
uninterrupted one (max |difference| over all steps; the newest line of each step counts). The full
disk is a real one: a small tmpfs mounted for the run (needs root; skipped otherwise). The cancel
scenario uses a larger model (so that a checkpoint takes seconds) and jobs.cancel_run with a 0.5 s
timeout, sent while status.json says a checkpoint is being written.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from transformers import GPT2Config, GPT2LMHeadModel

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from jobs import RunActiveError, cancel_run, delete_run, run_status, start_run  # noqa: E402
from lnfree_core.checkpoint import checkpoint_dirs, newest_good_checkpoint  # noqa: E402
from lnfree_core.rundir import read_jsonl  # noqa: E402

SCENARIOS = ("kill9", "disk", "corrupt", "concurrent", "cancel")
ENV = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def make_model(path: Path, **kw) -> Path:
    torch.manual_seed(0)
    cfg = dict(n_layer=2, n_embd=32, n_head=4, vocab_size=128, n_positions=64, resid_pdrop=0.0, embd_pdrop=0.0,
               attn_pdrop=0.0, bos_token_id=127, eos_token_id=127)
    cfg.update(kw)
    GPT2LMHeadModel(GPT2Config(**cfg)).save_pretrained(str(path))
    return path


def make_data(path: Path, vocab: int = 127) -> Path:
    rng = np.random.default_rng(0)
    with open(path, "w") as fh:
        for _ in range(512):
            start = int(rng.integers(0, 100))
            fh.write(json.dumps({"input_ids": [(start + 3 * i + int(rng.integers(0, 2))) % vocab for i in range(64)]}) + "\n")
    return path


def train_args(model: Path, data: Path, out: Path, steps: int, save_every: int = 5) -> list[str]:
    return ["train", "--model", str(model), "--dataset", str(data), "--schedule", "auto", "--out", str(out),
            "--max-steps", str(steps), "--batch-size", "2", "--seq-len", "16", "--device", "cpu",
            "--save-every", str(save_every)]


def cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lnfree_core", *args], env=ENV, capture_output=True, text=True,
                          timeout=timeout, cwd=str(REPO))


def popen(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "lnfree_core", *args], env=ENV, cwd=str(REPO),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def losses(run: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in read_jsonl(run / "metrics.jsonl") if r.get("type") == "step"}


def status(run: Path) -> dict:
    try:
        return json.loads((run / "status.json").read_text())
    except (OSError, ValueError):
        return {}


def wait_step(run: Path, step: int, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if status(run).get("step", 0) >= step:
            return
        time.sleep(0.01)
    raise RuntimeError(f"{run.name}: step {step} not reached")


def compare(run: Path, ref: dict[int, float]) -> str:
    got = losses(run)
    missing = sorted(set(ref) - set(got))
    if missing:
        return f"MISSING steps {missing[:5]}"
    diff = max(abs(got[s] - ref[s]) for s in ref)
    return f"max |loss diff| vs uninterrupted = {diff:.2e} over {len(ref)} steps"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default=None, help="scratch folder (default: a new temporary one)")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--only", nargs="*", default=None, choices=SCENARIOS, help="run only these scenarios")
    a = ap.parse_args()
    want = set(a.only or SCENARIOS)
    work = Path(a.work or tempfile.mkdtemp(prefix="lnfree-faults-"))
    work.mkdir(parents=True, exist_ok=True)
    model, data = make_model(work / "tiny"), make_data(work / "data.jsonl")
    steps = a.steps
    results: list[str] = []

    def say(line: str) -> None:
        results.append(line)
        print(line, flush=True)

    ref_run = work / "reference"
    r = cli(*train_args(model, data, ref_run, steps))
    assert r.returncode == 0, r.stderr[-2000:]
    ref = losses(ref_run)

    # 1. kill -9 in the middle of training, then again while a checkpoint is being written
    if "kill9" in want:
        run = work / "kill9"
        p = popen(*train_args(model, data, run, steps))
        wait_step(run, 12, p)
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
        at = status(run).get("step")
        p = popen(*train_args(model, data, run, steps), "--resume")
        caught = False
        deadline = time.time() + 300
        while p.poll() is None and time.time() < deadline:
            if status(run).get("checkpointing") and status(run).get("step", 0) >= 20:
                os.kill(p.pid, signal.SIGKILL)
                caught = True
                break
            time.sleep(0.0005)
        p.wait()
        at2 = status(run).get("step")
        tmp_left = [x.name for x in (run / "checkpoints").iterdir() if x.name.startswith(".tmp_step_")]
        r = cli(*train_args(model, data, run, steps), "--resume")
        tmp_after = [x.name for x in (run / "checkpoints").iterdir() if x.name.startswith(".tmp_step_")]
        say(f"kill -9 at step {at}" + (f", then kill -9 during the checkpoint of step {at2}" if caught else
                                       " (the second kill missed the checkpoint window)")
            + f": resume exit {r.returncode}; {compare(run, ref)}; half-written checkpoint folders "
            f"{len(tmp_left)} before resume, {len(tmp_after)} after")

    # 2. full disk: a tmpfs too small for the third checkpoint
    if "disk" in want:
        mnt = work / "smalldisk"
        mnt.mkdir(exist_ok=True)
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1200k", "tmpfs", str(mnt)],
                                 capture_output=True).returncode == 0
        if mounted:
            try:
                run = mnt / "run"
                r = cli(*train_args(model, data, run, steps, save_every=3))
                st = status(run)
                msg = (r.stderr.strip().splitlines() or ["-"])[-1][:160]
                left = [x.name for x in (run / "checkpoints").iterdir()] if (run / "checkpoints").exists() else []
                subprocess.run(["mount", "-o", "remount,size=20m", str(mnt)], check=True)
                r2 = cli(*train_args(model, data, run, steps, save_every=3), "--resume")
                say(f"full disk (1.2 MB tmpfs): trainer exit {r.returncode} at step {st.get('step')} "
                    f"(status {st.get('state')!r}), message: {msg!r}; checkpoints left {sorted(left)}; after freeing "
                    f"space, resume exit {r2.returncode}; {compare(run, ref)}")
            finally:
                subprocess.run(["umount", str(mnt)])
        else:
            say("full disk: skipped (cannot mount a tmpfs here; needs root)")

    # 3. corrupt newest checkpoint (truncated weights) and garbage JSON
    if "corrupt" in want:
        for how in ("truncated model.safetensors", "garbage trainer_state.json"):
            run = work / ("corrupt-" + how.split()[0])
            p = popen(*train_args(model, data, run, steps))
            wait_step(run, 17, p)
            os.kill(p.pid, signal.SIGKILL)
            p.wait()
            newest = checkpoint_dirs(run)[-1]
            if how.startswith("truncated"):
                f = newest / "model.safetensors"
                f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
            else:
                (newest / "trainer_state.json").write_text("{garbage")
            e = cli("export", str(run) + f"@{int(newest.name.split('_')[1])}", str(work / "exp-corrupt"))
            r = cli(*train_args(model, data, run, steps), "--resume")
            warn = next((line for line in r.stderr.splitlines() if "warning" in line), "-")
            say(f"corrupt checkpoint ({how}, {newest.name}): export of it exit {e.returncode} "
                f"({'message' if 'Traceback' not in e.stderr else 'TRACEBACK'}); resume exit {r.returncode}, "
                f"warning {warn[:150]!r}; {compare(run, ref)}")

    # 4. concurrent trainers on one run
    if "concurrent" in want:
        run = work / "concurrent"
        p = popen(*train_args(model, data, run, 2000, save_every=100))
        wait_step(run, 3, p)
        r = cli(*train_args(model, data, run, 2000, save_every=100), "--resume")
        st = run_status(run)
        try:
            delete_run(run)
            deleted = "DELETED"
        except RunActiveError:
            deleted = "refused"
        own = status(run).get("pid") == p.pid
        p.send_signal(signal.SIGTERM)
        p.wait(120)
        say(f"concurrent trainers: second trainer exit {r.returncode} ({r.stderr.strip().splitlines()[-1][:120]!r}); "
            f"status.json still the first trainer's: {own}; jobs sees it alive: {st.alive}; jobs delete while it "
            f"trains: {deleted}; first trainer after SIGTERM: {status(run).get('state')}")

    # 5. cancel during a checkpoint (a model whose checkpoint takes seconds), 0.5 s cancel timeout
    if "cancel" in want:
        big = make_model(work / "bigger", n_layer=4, n_embd=512, n_head=8, vocab_size=8192, n_positions=64,
                         bos_token_id=8191, eos_token_id=8191)
        root = work / "runs"
        rd = root / "cancel"
        flags = train_args(big, data, rd, 40, save_every=2)[1:]
        i = flags.index("--out")
        h = start_run(root, "cancel", {}, extra_args=flags[:i] + flags[i + 2:])
        deadline = time.time() + 600
        while time.time() < deadline and not (status(rd).get("checkpointing") and status(rd).get("step", 0) >= 4):
            time.sleep(0.005)
        t0 = time.time()
        st = cancel_run(rd, timeout=0.5)
        waited = time.time() - t0
        good = newest_good_checkpoint(rd)
        say(f"cancel during a checkpoint (timeout 0.5 s, {sum(f.stat().st_size for f in good.path.iterdir()) / 1e6:.0f} "
            f"MB checkpoint): waited {waited:.1f} s, state {st.state!r}, reason {st.reason!r}; newest checkpoint "
            f"{good.path.name} verifies: {not good.skipped}")
        del h
    print("\n".join(["", "summary:"] + results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
