"""Summary statistics of a per-token CE distribution (Table 1 and its footnotes).

Over all N scored tokens (every sequence, every predicting position, pooled):

    mean          = 1/N sum CE                     (accumulated in float64)
    median        = 50th percentile
    p2.5-97.5     = [P_2.5, P_97.5]                the paper's "95th perc" range (Table 1, footnote 3)
    p1-99         = [P_1,   P_99  ]                also computed by the reference evaluation
    p0.1-99.9     = [P_0.1, P_99.9]                the paper's "99.9th perc" range

Each range is named by its percentiles. P_q is numpy's default ("linear") percentile: for sorted values
v_0 <= .. <= v_{N-1}, the value at fractional index q/100 * (N - 1), linearly interpolated between
neighbours.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# name -> (lower, upper) percentile of each range
PERCENTILE_RANGES = {"p2.5-97.5": (2.5, 97.5), "p1-99": (1.0, 99.0), "p0.1-99.9": (0.1, 99.9)}


def range_label(name: str) -> str:
    """'p2.5-97.5' -> '2.5th-97.5th percentile'."""
    lo, hi = PERCENTILE_RANGES[name]
    return f"{lo:g}th-{hi:g}th percentile"


@dataclass(frozen=True)
class CESummary:
    tokens: int
    mean: float
    median: float
    ranges: dict[str, tuple[float, float]] = field(default_factory=dict)  # PERCENTILE_RANGES name -> (lo, hi)

    def to_dict(self) -> dict:
        return {"tokens": self.tokens, "mean": self.mean, "median": self.median,
                **{k: list(v) for k, v in self.ranges.items()}}

    @classmethod
    def from_dict(cls, d: dict) -> "CESummary":
        return cls(tokens=int(d["tokens"]), mean=float(d["mean"]), median=float(d["median"]),
                   ranges={k: (float(d[k][0]), float(d[k][1])) for k in PERCENTILE_RANGES if k in d})


def summarize_ce(losses) -> CESummary:
    """Summary of per-token losses (any shape; pooled). Non-finite losses propagate into the mean."""
    v = np.asarray(losses, dtype=np.float64).ravel()  # [N]
    if v.size == 0:
        raise ValueError("no losses to summarise")
    qs = [50.0] + [q for pair in PERCENTILE_RANGES.values() for q in pair]
    p = np.percentile(v, qs)
    ranges = {k: (float(p[1 + 2 * i]), float(p[2 + 2 * i])) for i, k in enumerate(PERCENTILE_RANGES)}
    return CESummary(tokens=int(v.size), mean=float(v.mean()), median=float(p[0]), ranges=ranges)
