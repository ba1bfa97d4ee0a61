"""Normalised mean absolute error between DLA and DE (appendix G, eq. 9, 10), with a bootstrap CI.

Per head h, over sequences i = 1..N (granularity "sequence", the paper's eq. 9; DLA_{i,h} and DE_{i,h}
are head h's per-sequence mean over predicting positions, dla.py):

    NMAE_h = ( 1/N sum_i |DLA_{i,h} - DE_{i,h}| ) / ( 1/N sum_i |DE_{i,h}| ) * 100%             (9)

or, with granularity "token", over every (sequence, position) pair: sum_{i,t} |DLA - DE| / sum_{i,t} |DE|.
Averages of absolute values, not of per-sample ratios (paper footnote 5). Overall:

    NMAE = 1/N_heads sum_h NMAE_h                                                                (10)

(heads with sum |DE| = 0 have no NMAE_h and are left out of the average). The 95% CI resamples
sequences with replacement and recomputes (10) (stats.py).

Alternatives a reader may meet (options; the default above is lnfree's reading of eq. 9/10):
  positions "last": DLA and DE at the last predicting position of each sequence only (dla.py);
  pooling "pooled": one ratio over all heads, sum_{i,h} |DLA - DE| / sum_{i,h} |DE|, instead of the
    mean of per-head ratios (eq. 10); heads with large |DE| then weigh more;
  centred W_U: a setting of the forward pass (dla.py, center_unembed).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .dla import HeadAttribution
from .stats import bootstrap_ci

GRANULARITIES = ("sequence", "token")
POSITIONS = ("all", "last")
POOLINGS = ("mean", "pooled")


def _nmae_heads(err: np.ndarray, mag: np.ndarray) -> np.ndarray:
    """100 * sum_i err / sum_i mag per head: err, mag [n, L, H] -> [L, H] (nan where sum mag = 0)."""
    num, den = err.sum(axis=0), mag.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, 100.0 * num / den, np.nan)


@dataclass(frozen=True)
class NMAEResult:
    granularity: str
    overall: float  # eq. 10 (or the pooled ratio), percent
    ci: tuple[float, float]
    per_head: list[list[float]]  # [L][H], eq. 9, percent
    positions: str = "all"
    pooling: str = "mean"

    def to_dict(self) -> dict:
        return {"granularity": self.granularity, "overall": self.overall, "ci": list(self.ci),
                "per_head": self.per_head, "positions": self.positions, "pooling": self.pooling}


def nmae(attr: HeadAttribution, granularity: str = "sequence", *, positions: str = "all", pooling: str = "mean",
         n_boot: int = 1000, ci: float = 0.95, seed: int = 0) -> NMAEResult:
    """Eq. 9 per head and eq. 10 overall (or a pooled ratio), with a percentile bootstrap CI over sequences."""
    if positions not in POSITIONS:
        raise ValueError(f"positions must be one of {POSITIONS}, got {positions!r}")
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    if positions == "last":
        if attr.dla_last is None:
            raise ValueError("these attributions have no last-position values; recompute them")
        err, mag = np.abs(attr.dla_last - attr.de_last), np.abs(attr.de_last)
    elif granularity == "sequence":
        err, mag = np.abs(attr.dla - attr.de), np.abs(attr.de)
    elif granularity == "token":
        err, mag = attr.abs_err, attr.abs_de
    else:
        raise ValueError(f"granularity must be one of {GRANULARITIES}, got {granularity!r}")
    data = np.stack([err, mag], axis=1)  # [n, 2, L, H]

    def stat(d: np.ndarray) -> float:
        if pooling == "pooled":
            den = d[:, 1].sum()
            return float(100.0 * d[:, 0].sum() / den) if den > 0 else float("nan")
        return float(np.nanmean(_nmae_heads(d[:, 0], d[:, 1])))

    per_head = _nmae_heads(err, mag)
    return NMAEResult(granularity=granularity, overall=stat(data),
                      ci=bootstrap_ci(data, stat, n_boot=n_boot, ci=ci, seed=seed), per_head=per_head.tolist(),
                      positions=positions, pooling=pooling)
