"""Percentile bootstrap over sequences against a written-out resampling loop."""

from __future__ import annotations

import numpy as np
import pytest

from lnfree_core.analysis.stats import bootstrap_ci


def test_default_mean_matches_an_explicit_loop():
    rng = np.random.default_rng(3)
    data = rng.normal(size=(50, 4))
    lo, hi = bootstrap_ci(data, n_boot=300, seed=7, batch=64)
    # the same draws, written out: one resample of 50 row indices per replicate, in order
    draw = np.random.default_rng(7)
    reps = []
    for b0 in range(0, 300, 64):
        idx = draw.integers(0, 50, size=(min(64, 300 - b0), 50))
        reps += [data[i].mean() for i in idx]
    assert (lo, hi) == pytest.approx(tuple(np.percentile(reps, [2.5, 97.5])), rel=1e-12)
    assert lo < data.mean() < hi


def test_custom_statistic_and_degenerate_data():
    data = np.ones((20, 3))
    assert bootstrap_ci(data, lambda d: float(d.sum(axis=0)[0] / len(d)), n_boot=50) == (1.0, 1.0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=400)
    lo, hi = bootstrap_ci(x, lambda d: float(np.median(d)), n_boot=200, ci=0.9)
    assert lo < np.median(x) < hi and hi - lo < 0.5
    with pytest.raises(ValueError):
        bootstrap_ci(np.zeros((0, 2)))
