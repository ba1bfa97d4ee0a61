"""A trainer run killed part-way, for the resume tests (tests/test_core_*.py)."""

from __future__ import annotations

import pytest

import lnfree_core.train as tr


def train_crashing_at(cfg, step: int) -> None:
    """Run tr.train(cfg) and crash it with KeyboardInterrupt when it reaches optimizer step `step` (asked for
    that step's learning rate), as a kill would; the trainer's lr_at is restored afterwards."""
    real_lr = tr.lr_at

    def crash(s, *a):
        if s == step:
            raise KeyboardInterrupt("simulated crash")
        return real_lr(s, *a)

    tr.lr_at = crash
    try:
        with pytest.raises(KeyboardInterrupt):
            tr.train(cfg)
    finally:
        tr.lr_at = real_lr
