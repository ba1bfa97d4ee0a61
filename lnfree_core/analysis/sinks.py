"""Attention sink rate (section 5.3; Gu et al. 2025): how often the first token draws > tau of the attention.

Definitions (tau = 0.3 in the paper), for sequence i of T tokens, layer l, head h, query q:

  "query" (default; the paper's number, as the reference's calculate_sink_rate counts): every
  (layer, head, query) triple counts on its own, query 0 included (A[0, 0] = 1 always counts),

      rate_i = 1/(L H T) sum_{l,h} #{q : A_{i,l,h}[q, 0] > tau}          (first_token.sink_counts)

  "head-mean" (lnfree's earlier convention): a head is a sink on a sequence when its attention to
  position 0 averaged over queries q > 0 is >= tau,

      rate_i = 1/(L H) sum_{l,h} [first_attn[i, l, h] >= tau]

The reported rate is the mean of rate_i over sequences. Intervals (`ci_method`):

  "batches" (default; what the paper's "95% CI" is): the 2.5th-97.5th percentile spread of the rate of
  consecutive batches of `ci_batch` sequences (8 in the reference); the rate is then the mean of the
  batch rates, as the reference reports it (equal to the sequence mean when n is a multiple of 8).
  "bootstrap": a percentile bootstrap interval of the mean over sequences (stats.py).

What a rate means depends on the sequence length T, because early queries have few positions to
attend to. `uniform_rate` is the rate of a model whose every head attends uniformly over its causal
prefix (A[q, 0] = 1/(q+1)), the floor a head with no preference for position 0 already reaches:

  "query":     #{q in 0..T-1 : 1/(q+1) > tau} / T          (tau = 0.3: q = 0, 1, 2, so 3/T;
                                                              2.3% at T = 128, 0.6% at T = 512)
  "head-mean": [ 1/(T-1) sum_{q=1}^{T-1} 1/(q+1) >= tau ]   (0 for tau = 0.3 once T >= 4)

SinkRate.uniform holds it (None where T is not known).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .stats import bootstrap_ci

DEFAULT_SINK_THRESHOLD = 0.3
DEFINITIONS = ("query", "head-mean")
CI_METHODS = ("batches", "bootstrap")
REFERENCE_CI_BATCH = 8


@dataclass(frozen=True)
class SinkRate:
    threshold: float
    rate: float
    ci: tuple[float, float]
    per_layer: list[float]
    per_head: list[list[float]]  # [L][H]: the head's share of sink (sequence, query) pairs / sequences
    definition: str = "query"
    ci_method: str = "batches"
    ci_label: str = ""
    uniform: float | None = None  # the rate under uniform causal attention (uniform_rate), None if T unknown

    def to_dict(self) -> dict:
        return {"threshold": self.threshold, "rate": self.rate, "ci": list(self.ci), "per_layer": self.per_layer,
                "per_head": self.per_head, "definition": self.definition, "ci_method": self.ci_method,
                "ci_label": self.ci_label, "uniform": self.uniform}


def uniform_rate(seq_len: int, threshold: float = DEFAULT_SINK_THRESHOLD, definition: str = "query") -> float:
    """The sink rate of heads that attend uniformly over the causal prefix (A[q, 0] = 1/(q+1); module docstring)."""
    if seq_len < 1:
        raise ValueError(f"seq_len must be >= 1, got {seq_len}")
    q = np.arange(seq_len, dtype=np.float64)
    if definition == "query":
        return float(np.mean(1.0 / (q + 1.0) > threshold))
    if definition == "head-mean":
        if seq_len < 2:
            return 0.0  # no query after position 0: first_attn is undefined; nothing counts
        return float(np.mean(1.0 / (q[1:] + 1.0)) >= threshold)
    raise ValueError(f"sink definition must be one of {DEFINITIONS}, got {definition!r}")


def _interval(per_seq: np.ndarray, ci_method: str, ci_batch: int, n_boot: int, ci: float,
              seed: int) -> tuple[float, tuple[float, float], str]:
    """(rate, interval, label) from the per-sequence rates [n]."""
    pct = (100 * (1 - ci) / 2, 100 * (1 + ci) / 2)
    if ci_method == "batches":
        if ci_batch < 1:
            raise ValueError(f"ci_batch must be >= 1, got {ci_batch}")
        batches = np.array([per_seq[i:i + ci_batch].mean() for i in range(0, per_seq.size, ci_batch)])
        lo, hi = np.percentile(batches, pct)
        label = (f"{pct[0]:g}th-{pct[1]:g}th percentile of {batches.size} batch rates "
                 f"(batches of {ci_batch} sequences)")
        return float(batches.mean()), (float(lo), float(hi)), label
    if ci_method == "bootstrap":
        label = f"{100 * ci:g}% bootstrap interval of the mean over {per_seq.size} sequences ({n_boot} resamples)"
        return float(per_seq.mean()), bootstrap_ci(per_seq, n_boot=n_boot, ci=ci, seed=seed), label
    raise ValueError(f"ci_method must be one of {CI_METHODS}, got {ci_method!r}")


def sink_rate_from_counts(counts, n_queries: int, thresholds, threshold: float = DEFAULT_SINK_THRESHOLD, *,
                          ci_method: str = "batches", ci_batch: int = REFERENCE_CI_BATCH, n_boot: int = 1000,
                          ci: float = 0.95, seed: int = 0) -> SinkRate:
    """The "query" sink rate from counts [n, L, H, K] of queries with A[q, 0] > thresholds[k]."""
    c = np.asarray(counts)
    if c.ndim != 4:
        raise ValueError(f"sink counts must be [n, layers, heads, thresholds], got shape {c.shape}")
    ths = [round(float(t), 6) for t in thresholds]
    if round(float(threshold), 6) not in ths:
        raise ValueError(f"sink threshold {threshold} was not counted; choose one of {ths}")
    share = c[..., ths.index(round(float(threshold), 6))].astype(np.float64) / n_queries  # [n, L, H]
    per_seq = share.reshape(share.shape[0], -1).mean(axis=1)  # [n]
    rate, interval, label = _interval(per_seq, ci_method, ci_batch, n_boot, ci, seed)
    return SinkRate(threshold=float(threshold), rate=rate, ci=interval, per_layer=share.mean(axis=(0, 2)).tolist(),
                    per_head=share.mean(axis=0).tolist(), definition="query", ci_method=ci_method, ci_label=label,
                    uniform=uniform_rate(n_queries, threshold, "query"))


def sink_rate(first_attn, threshold: float = DEFAULT_SINK_THRESHOLD, *, ci_method: str = "bootstrap",
              ci_batch: int = REFERENCE_CI_BATCH, n_boot: int = 1000, ci: float = 0.95, seed: int = 0,
              seq_len: int | None = None) -> SinkRate:
    """The "head-mean" sink rate of first_attn [n, L, H] (mean attention to position 0 over queries > 0);
    ``seq_len`` (T, when known) fills SinkRate.uniform."""
    a = np.asarray(first_attn, dtype=np.float64)
    if a.ndim != 3:
        raise ValueError(f"first_attn must be [n, layers, heads], got shape {a.shape}")
    sinks = (a >= threshold).astype(np.float64)  # [n, L, H]
    per_seq = sinks.reshape(a.shape[0], -1).mean(axis=1)  # [n]
    rate, interval, label = _interval(per_seq, ci_method, ci_batch, n_boot, ci, seed)
    return SinkRate(threshold=float(threshold), rate=rate, ci=interval, per_layer=sinks.mean(axis=(0, 2)).tolist(),
                    per_head=sinks.mean(axis=0).tolist(), definition="head-mean", ci_method=ci_method,
                    ci_label=label, uniform=None if seq_len is None else uniform_rate(seq_len, threshold, "head-mean"))
