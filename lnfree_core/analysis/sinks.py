"""Attention sink rate (section 5.3): the share of heads whose first token draws >= tau of the attention.

With first_attn[i, l, h] from first_token.py (attention to position 0 averaged over query positions
q > 0, per sequence i, layer l, head h), a head is a sink on sequence i when

    first_attn[i, l, h] >= tau                 (tau = 0.3 in the paper)

    rate_i = 1/(L H) sum_{l,h} [first_attn[i, l, h] >= tau]      per sequence
    rate   = 1/n sum_i rate_i                                     reported, with a bootstrap CI over sequences
    rate_l = 1/(n H) sum_{i,h} [first_attn[i, l, h] >= tau]       per layer
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .stats import bootstrap_ci

DEFAULT_SINK_THRESHOLD = 0.3


@dataclass(frozen=True)
class SinkRate:
    threshold: float
    rate: float
    ci: tuple[float, float]
    per_layer: list[float]
    per_head: list[list[float]]  # [L][H]: share of sequences on which the head is a sink

    def to_dict(self) -> dict:
        return {"threshold": self.threshold, "rate": self.rate, "ci": list(self.ci),
                "per_layer": self.per_layer, "per_head": self.per_head}


def sink_rate(first_attn, threshold: float = DEFAULT_SINK_THRESHOLD, *, n_boot: int = 1000, ci: float = 0.95,
              seed: int = 0) -> SinkRate:
    """Sink rate of first_attn [n, L, H] at `threshold`, with a percentile bootstrap CI over sequences."""
    a = np.asarray(first_attn, dtype=np.float64)
    if a.ndim != 3:
        raise ValueError(f"first_attn must be [n, layers, heads], got shape {a.shape}")
    sinks = (a >= threshold).astype(np.float64)  # [n, L, H]
    per_seq = sinks.reshape(a.shape[0], -1).mean(axis=1)  # [n]
    return SinkRate(threshold=float(threshold), rate=float(per_seq.mean()),
                    ci=bootstrap_ci(per_seq, n_boot=n_boot, ci=ci, seed=seed),
                    per_layer=sinks.mean(axis=(0, 2)).tolist(), per_head=sinks.mean(axis=0).tolist())
