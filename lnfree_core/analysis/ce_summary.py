"""Summary statistics of a per-token CE distribution (Table 1 and its footnotes).

Over all N scored tokens (every sequence, every predicting position, pooled):

    mean   = 1/N sum CE                     (accumulated in float64)
    median = 50th percentile
    p95    = [P_2.5,  P_97.5 ]              central 95% range
    p99    = [P_0.5,  P_99.5 ]              central 99% range
    p999   = [P_0.05, P_99.95]              central 99.9% range

P_q is numpy's default ("linear") percentile: for sorted values v_0 <= .. <= v_{N-1}, the value at
fractional index q/100 * (N - 1), linearly interpolated between neighbours. The paper's footnote
"95th perc: [0.0005, 10.6193]" is such a central range.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

# name -> (lower, upper) percentile of each central range
CENTRAL_RANGES = {"p95": (2.5, 97.5), "p99": (0.5, 99.5), "p999": (0.05, 99.95)}


@dataclass(frozen=True)
class CESummary:
    tokens: int
    mean: float
    median: float
    p95: tuple[float, float]
    p99: tuple[float, float]
    p999: tuple[float, float]

    def to_dict(self) -> dict:
        d = asdict(self)
        for k in CENTRAL_RANGES:
            d[k] = list(d[k])
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "CESummary":
        return cls(tokens=int(d["tokens"]), mean=float(d["mean"]), median=float(d["median"]),
                   **{k: (float(d[k][0]), float(d[k][1])) for k in CENTRAL_RANGES})


def summarize_ce(losses) -> CESummary:
    """Summary of per-token losses (any shape; pooled). Non-finite losses propagate into the mean."""
    v = np.asarray(losses, dtype=np.float64).ravel()  # [N]
    if v.size == 0:
        raise ValueError("no losses to summarise")
    qs = [50.0] + [q for pair in CENTRAL_RANGES.values() for q in pair]
    p = np.percentile(v, qs)
    ranges = {k: (float(p[1 + 2 * i]), float(p[2 + 2 * i])) for i, k in enumerate(CENTRAL_RANGES)}
    return CESummary(tokens=int(v.size), mean=float(v.mean()), median=float(p[0]), **ranges)
