"""Bootstrap confidence intervals over sequences.

Sequences are the independent units: a statistic computed from per-sequence values
`data` [n_sequences, ...] is recomputed on B resamples of the sequences drawn with replacement,

    theta*_b = stat(data[idx_b]),   idx_b ~ Uniform{0..n-1}^n,   b = 1..B

and the (1 - alpha) interval is the percentile interval [P_{100 alpha/2}(theta*), P_{100 (1 - alpha/2)}(theta*)]
(numpy's linear percentiles). The resampling is seeded, so an interval is reproducible.
"""

from __future__ import annotations

from typing import Callable

import numpy as np


def bootstrap_ci(data, stat: Callable[[np.ndarray], float] | None = None, *, n_boot: int = 1000,
                 ci: float = 0.95, seed: int = 0, batch: int = 100) -> tuple[float, float]:
    """Percentile bootstrap interval of `stat` over the rows (sequences) of `data` [n, ...].

    Default stat: the grand mean, i.e. the mean over sequences of each sequence's mean value.
    """
    data = np.asarray(data)
    n = data.shape[0]
    if n == 0:
        raise ValueError("bootstrap needs at least one sequence")
    if not 0.0 < ci < 1.0:
        raise ValueError(f"ci must be in (0, 1), got {ci}")
    rng = np.random.default_rng(seed)
    if stat is None:
        row_means = data.reshape(n, -1).astype(np.float64).mean(axis=1)  # [n]
        thetas = []
        for b0 in range(0, n_boot, batch):  # vectorised in batches of resamples
            idx = rng.integers(0, n, size=(min(batch, n_boot - b0), n))  # [b, n]
            thetas.append(row_means[idx].mean(axis=1))  # [b]
        thetas = np.concatenate(thetas)
    else:
        thetas = np.array([stat(data[rng.integers(0, n, size=n)]) for _ in range(n_boot)], dtype=np.float64)
    alpha = 1.0 - ci
    lo, hi = np.nanpercentile(thetas, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return float(lo), float(hi)
