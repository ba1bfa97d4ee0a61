"""A run's metrics.jsonl as chart frames: step metrics, tracked sigmas, removal and other events, long
frames for several runs, spike-preserving downsampling, and an incremental reader (MetricsCache).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from lnfree_core.rundir import merge_resumed, read_metrics

from .schedule_view import GROUP_LABELS, group_of


STEP_METRICS = ("loss", "aux_loss", "lr", "grad_norm", "tokens_per_s")
METRIC_TITLES = {
    "loss": "main loss (cross-entropy)",
    "aux_loss": "aux loss (eq. 3)",
    "lr": "learning rate",
    "grad_norm": "gradient norm (before clipping)",
    "tokens_per_s": "tokens / s",
}
DEFAULT_MAX_POINTS = 3000


def to_float(value: Any) -> float:
    """A metrics value as float: None -> nan; 'nan'/'inf' strings (how the trainer writes them) parsed."""
    if value is None:
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def step_frame(rows: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """The step rows of metrics.jsonl as a wide frame: step, loss, aux_loss, lr, grad_norm, tokens_per_s,
    tflops, mfu (nan when not logged: older runs, or no known peak), tokens, time (one row per step; a step logged twice keeps its last row)."""
    cols = ["step", *STEP_METRICS, "tflops", "mfu", "tokens", "time"]
    data = [
        {"step": int(r["step"]), **{k: to_float(r.get(k)) for k in cols[1:]}}
        for r in rows
        if r.get("type") == "step" and isinstance(r.get("step"), int)
    ]
    df = pd.DataFrame(data, columns=cols)
    if df.empty:
        return df
    return df.drop_duplicates("step", keep="last").sort_values("step").reset_index(drop=True)


def sigma_frame(rows: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """Long frame of every block's tracked sigma: step, block ('mlp.0', ..., 'f'), group (label), sigma."""
    data = []
    for r in rows:
        sig = r.get("sigma")
        if r.get("type") != "step" or not isinstance(sig, dict) or not isinstance(r.get("step"), int):
            continue
        for block, val in sig.items():
            data.append({"step": r["step"], "block": block, "group": GROUP_LABELS.get(group_of(block), block),
                         "sigma": to_float(val)})
    df = pd.DataFrame(data, columns=["step", "block", "group", "sigma"])
    if df.empty:
        return df
    return df.drop_duplicates(["step", "block"], keep="last").sort_values(["block", "step"]).reset_index(drop=True)


def removal_frame(rows: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """The removal events that happened: step, block, layer, name, group (label), sigma."""
    data = []
    for r in rows:
        if r.get("type") != "event" or r.get("kind") != "removal":
            continue
        block, layer = r.get("block"), r.get("layer")
        name = "f" if block == "f" else f"{block}.{layer}"
        data.append({"step": r.get("step"), "block": block, "layer": layer, "name": name,
                     "group": GROUP_LABELS.get(block, str(block)), "sigma": to_float(r.get("sigma"))})
    return pd.DataFrame(data, columns=["step", "block", "layer", "name", "group", "sigma"])


def notable_events(rows: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """Events other than removals, checkpoints and the throughput note (non-finite loss, grad spikes, resumes): step, kind, message."""
    data = [
        {"step": r.get("step"), "kind": r.get("kind"), "message": r.get("message", "")}
        for r in rows
        if r.get("type") == "event" and r.get("kind") not in ("removal", "checkpoint", "throughput")
    ]
    return pd.DataFrame(data, columns=["step", "kind", "message"])


def metric_long(step_frames: Mapping[str, pd.DataFrame], metrics: Sequence[str] = STEP_METRICS) -> pd.DataFrame:
    """Long frame (run, metric, step, value) from {run label: step_frame}; rows with no value dropped."""
    parts = []
    for run, df in step_frames.items():
        if df.empty:
            continue
        for m in metrics:
            part = pd.DataFrame({"run": run, "metric": m, "step": df["step"], "value": df[m]})
            parts.append(part[np.isfinite(part["value"].to_numpy(dtype=float))])
    if not parts:
        return pd.DataFrame(columns=["run", "metric", "step", "value"])
    return pd.concat(parts, ignore_index=True)


def _bucket_extrema(x: np.ndarray, y: np.ndarray, max_points: int) -> np.ndarray:
    """Indices to keep of one series sorted by x: first, last, and each bucket's min and max of y."""
    n = len(x)
    if n <= max_points:
        return np.arange(n)
    buckets = max(1, (max_points - 2) // 2)
    edges = np.linspace(0, n, buckets + 1).astype(int)
    keep = {0, n - 1}
    finite = np.isfinite(y)
    for lo, hi in zip(edges[:-1], edges[1:]):
        if hi <= lo:
            continue
        seg = y[lo:hi]
        ok = finite[lo:hi]
        if not ok.any():
            keep.add(lo)
            continue
        idx = np.flatnonzero(ok)
        keep.add(lo + int(idx[np.argmin(seg[idx])]))
        keep.add(lo + int(idx[np.argmax(seg[idx])]))
    return np.array(sorted(keep))


def downsample(df: pd.DataFrame, x: str = "step", y: str = "value", by: Sequence[str] = (),
               max_points: int = DEFAULT_MAX_POINTS) -> pd.DataFrame:
    """At most about `max_points` rows in all, shared evenly by the series (groups of `by`).

    Each series keeps its first and last point and, in each of its x buckets, the points with the
    smallest and largest y, so spikes survive (a loss spike after a removal event stays visible).
    """
    if df.empty or len(df) <= max_points:
        return df.sort_values([*by, x]).reset_index(drop=True) if not df.empty else df
    groups = list(df.groupby(list(by), sort=True)) if by else [((), df)]
    per = max(8, max_points // max(1, len(groups)))
    out = []
    for _, g in groups:
        g = g.sort_values(x)
        idx = _bucket_extrema(g[x].to_numpy(), g[y].to_numpy(dtype=float), per)
        out.append(g.iloc[idx])
    return pd.concat(out, ignore_index=True)


@dataclass
class MetricsCache:
    """Rows of one run's metrics.jsonl read incrementally (only new bytes on each `update`)."""

    run_dir: str
    offset: int = 0
    rows: list[dict[str, Any]] = field(default_factory=list)

    def update(self) -> list[dict[str, Any]]:
        """Read what was appended since the last call; returns the run's effective history (resumes merged)."""
        new, offset = read_metrics(self.run_dir, self.offset)
        if offset < self.offset:  # the file was replaced: start over
            self.rows = []
        self.rows.extend(new)
        self.offset = offset
        return merge_resumed(self.rows)
