"""bench/gpu_suite.py keeps working without a GPU: its --tiny run passes every row, and any error exits 1."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_gpu_suite_runs_every_row_on_the_cpu_at_tiny_shapes():
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "gpu_suite.py"), "--tiny", "--budget-s", "1800"],
                          env=env, capture_output=True, text=True, timeout=1800, cwd=str(REPO))
    out = proc.stdout
    assert proc.returncode == 0, out[-3000:] + proc.stderr[-3000:]
    for variant in ("vanilla", "lnfree-live", "lnfree-removed"):
        for mode in ("eager", "eager +ckpt", "compiled", "compiled +ckpt"):
            line = next(ln for ln in out.splitlines() if ln.startswith(f"{variant} {mode} "))
            assert "(failed)" not in line and "(skipped)" not in line
    for label in ("lnfree per_token_ce", "1 process", "torchrun x2 DDP", "torchrun x2 FSDP"):
        assert any(ln.startswith(label) and "(failed)" not in ln for ln in out.splitlines()), label
    assert "errors: 0" in out


def test_gpu_suite_exits_1_when_a_row_fails(monkeypatch, capsys):
    sys.path.insert(0, str(REPO / "bench"))
    import gpu_suite

    def boom(*a, **kw):
        raise ValueError("simulated failure")

    for name in ("train_step_row", "eval_row", "write_fixture"):
        monkeypatch.setattr(gpu_suite, name, boom)
    assert gpu_suite.main(["--tiny"]) == 1
    out = capsys.readouterr().out
    assert "ERROR vanilla eager: ValueError: simulated failure" in out and "(failed)" in out
