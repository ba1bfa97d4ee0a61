"""Frames for the analysis pages (Compare, Outliers, First tokens, Confidence neurons, DLA).

Every number in them comes from lnfree_core.analysis; these helpers only reshape it for charts and
tables (the one exception is loss_histogram, which counts per-token losses into bins for a chart).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from lnfree_core.analysis.tables import TableEntry, ce_table


SUMMARY_STATS = {"mean": "mean (Table 1)", "median": "median",
                 "p2.5-97.5": "2.5th-97.5th percentile (the paper's \"95th\")", "p1-99": "1st-99th percentile",
                 "p0.1-99.9": "0.1th-99.9th percentile (the paper's \"99.9th\")"}
RANGE_STATS = ("p2.5-97.5", "p1-99", "p0.1-99.9")


@dataclass(frozen=True)
class CERow:
    """One evaluated (model, dataset) pair as the Compare page shows it."""

    label: str
    dataset: str
    summary: Any  # lnfree_core.analysis.ce_summary.CESummary
    ln_free: bool
    group: str | None = None


def ce_summary_frame(rows: Sequence[CERow]) -> pd.DataFrame:
    """Every summary number of every pair: model, dataset, group, ln_free, tokens, mean, median and
    the lower/upper ends of the 2.5-97.5, 1-99 and 0.1-99.9 percentile ranges (columns '<range>_lo/_hi')."""
    cols = ["model", "dataset", "group", "ln_free", "tokens", "mean", "median"] + \
        [f"{k}_{e}" for k in RANGE_STATS for e in ("lo", "hi")]
    data = []
    for r in rows:
        s = r.summary
        rec = {"model": r.label, "dataset": r.dataset, "group": r.group or "", "ln_free": bool(r.ln_free),
               "tokens": int(s.tokens), "mean": float(s.mean), "median": float(s.median)}
        for k in RANGE_STATS:
            lo, hi = s.ranges[k]
            rec[f"{k}_lo"], rec[f"{k}_hi"] = float(lo), float(hi)
        data.append(rec)
    return pd.DataFrame(data, columns=cols)


def stat_table(rows: Sequence[CERow], stat: str = "mean"):
    """Table 1 (lnfree_core.analysis.tables.ce_table) of `stat` ('mean' or 'median'): the lowest per
    group and dataset marked, LN-free gaps to it."""
    if stat not in ("mean", "median"):
        raise ValueError(f"stat must be 'mean' or 'median' for Table 1, got {stat!r}")
    return ce_table([TableEntry(r.label, r.dataset, float(getattr(r.summary, stat)), ln_free=bool(r.ln_free),
                                group=r.group or None) for r in rows])


def range_frame(rows: Sequence[CERow], stat: str, digits: int = 4) -> pd.DataFrame:
    """Models x datasets of a percentile range (RANGE_STATS: 'p2.5-97.5', 'p1-99', 'p0.1-99.9') as '[lo, hi]'."""
    if stat not in RANGE_STATS:
        raise ValueError(f"stat must be one of {RANGE_STATS}, got {stat!r}")
    models: list[str] = []
    datasets: list[str] = []
    cells: dict[tuple[str, str], str] = {}
    for r in rows:
        if r.label not in models:
            models.append(r.label)
        if r.dataset not in datasets:
            datasets.append(r.dataset)
        lo, hi = r.summary.ranges[stat]
        cells[(r.label, r.dataset)] = f"[{lo:.{digits}f}, {hi:.{digits}f}]"
    data = [{"Model": m, **{d: cells.get((m, d), "-") for d in datasets}} for m in models]
    return pd.DataFrame(data, columns=["Model", *datasets])


def frame_markdown(df: pd.DataFrame) -> str:
    """A frame as a Markdown table (cells as text, '|' escaped)."""
    def cell(v: Any) -> str:
        return str(v).replace("|", "\\|")

    head = [cell(c) for c in df.columns]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def loss_histogram(losses: Mapping[str, Any], bins: int = 60, floor: float = 1e-6) -> pd.DataFrame:
    """Per-token CE distributions on log-spaced bins shared by all models, for a log-x chart.

    Bins span [the smallest finite loss of any model, but at least `floor`; the largest]; losses below
    `floor` (0 included) count in the first bin. Rows: model, lo, hi, count, share (count / the
    model's finite losses). Non-finite losses are left out.
    """
    finite = {}
    bottom, top = math.inf, 0.0
    for label, arr in losses.items():
        v = np.asarray(arr, dtype=np.float64).ravel()
        v = v[np.isfinite(v)]
        finite[label] = v
        if v.size:
            bottom, top = min(bottom, float(v.min())), max(top, float(v.max()))
    bottom = max(floor, bottom if math.isfinite(bottom) else floor)
    top = max(top, bottom * 10)
    edges = np.geomspace(bottom, top * (1 + 1e-9), bins + 1)
    parts = []
    for label, v in finite.items():
        counts, _ = np.histogram(np.clip(v, bottom, None), bins=edges)
        parts.append(pd.DataFrame({"model": label, "lo": edges[:-1], "hi": edges[1:], "count": counts,
                                   "share": counts / max(1, v.size)}))
    if not parts:
        return pd.DataFrame(columns=["model", "lo", "hi", "count", "share"])
    return pd.concat(parts, ignore_index=True)


def ranked_frame(ranked: Sequence[Any], exceeding: Iterable[int] = ()) -> pd.DataFrame:
    """Ranked sequences (analysis.outliers.RankedSequence) as rows: rank, sequence, mean CE, max CE,
    max at position, over threshold (whether the sequence is among `exceeding`)."""
    over = {int(i) for i in exceeding}
    cols = ["rank", "sequence", "mean CE", "max CE", "max at position", "over threshold"]
    data = [{"rank": k + 1, "sequence": r.index, "mean CE": r.mean, "max CE": r.max,
             "max at position": r.argmax_position, "over threshold": r.index in over} for k, r in enumerate(ranked)]
    return pd.DataFrame(data, columns=cols)


def token_frame(rows: Sequence[Any], label_a: str = "loss", label_b: str = "loss_b") -> pd.DataFrame:
    """Per-token rows of one sequence (TokenLoss, or TokenDiff of two models) for tables and charts:
    position, token_id, token (unicode_escape), and the loss, or the two losses and diff = b - a."""
    data = []
    for r in rows:
        rec = {"position": r.position, "token_id": r.token_id, "token": r.escaped}
        if hasattr(r, "diff"):
            rec.update({label_a: r.loss_a, label_b: r.loss_b, "diff": r.diff})
        else:
            rec[label_a] = r.loss
        data.append(rec)
    cols = ["position", "token_id", "token", label_a] + ([label_b, "diff"] if rows and hasattr(rows[0], "diff") else [])
    return pd.DataFrame(data, columns=cols).astype({c: float for c in cols[3:]})


def norm_profile_frame(profiles: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    """{model: FirstTokenStats.profile()} as a long frame: model, point (residual point name), layer
    (its index), position ('first token' | 'other tokens'), norm, ratio (first / other)."""
    data = []
    for label, prof in profiles.items():
        for i, (pt, f, r, q) in enumerate(zip(prof["points"], prof["first"], prof["rest"], prof["ratio"])):
            data.append({"model": label, "point": pt, "layer": i, "position": "first token", "norm": f, "ratio": q})
            data.append({"model": label, "point": pt, "layer": i, "position": "other tokens", "norm": r, "ratio": q})
    return pd.DataFrame(data, columns=["model", "point", "layer", "position", "norm", "ratio"])


def sink_frames(rates: Mapping[str, Any]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """{model: SinkRate} as (overall: model, rate, ci_lo, ci_hi, threshold, uniform (the rate of uniform causal
    attention, sinks.uniform_rate); per layer: model, layer, rate)."""
    cols = ["model", "rate", "ci_lo", "ci_hi", "threshold", "uniform"]
    overall = pd.DataFrame([{"model": m, "rate": r.rate, "ci_lo": r.ci[0], "ci_hi": r.ci[1], "threshold": r.threshold,
                             "uniform": r.uniform} for m, r in rates.items()], columns=cols)
    per_layer = pd.DataFrame([{"model": m, "layer": i, "rate": v} for m, r in rates.items()
                              for i, v in enumerate(r.per_layer)], columns=["model", "layer", "rate"])
    return overall, per_layer


def cn_scatter_frame(label: str, scores: Any, marked: Sequence[int]) -> pd.DataFrame:
    """One row per last-layer neuron (ConfidenceScores): model, neuron, norm, logit_var, score, and
    top = its 1-based rank among `marked` (0 when not marked)."""
    rank = {int(n): k + 1 for k, n in enumerate(marked)}
    n = len(scores.score)
    return pd.DataFrame({"model": label, "neuron": np.arange(n), "norm": np.asarray(scores.norm, dtype=float),
                         "logit_var": np.asarray(scores.logit_var, dtype=float),
                         "score": np.asarray(scores.score, dtype=float), "top": [rank.get(i, 0) for i in range(n)]})


def ablation_frames(abl: Mapping[str, Mapping[str, Any]]) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """{model: AblationResult.to_dict()} as (baseline: model, ce, entropy, tokens; single: model, rank
    (1 = the top neuron), neuron, ce, entropy, delta_ce, delta_entropy, rel_ce, rel_entropy;
    cumulative: model, k, neurons and the same columns) -- the values of the paper's Fig. 8 and 9."""
    cols = ["ce", "entropy", "delta_ce", "delta_entropy", "rel_ce", "rel_entropy"]
    base, single, cum = [], [], []
    for m, d in abl.items():
        base.append({"model": m, "ce": d["baseline"]["ce"], "entropy": d["baseline"]["entropy"], "tokens": d["tokens"]})
        single += [{"model": m, "rank": k + 1, "neuron": r["neuron"], **{c: r[c] for c in cols}}
                   for k, r in enumerate(d["single"])]
        cum += [{"model": m, "k": k + 1, "neurons": ", ".join(map(str, r["neurons"])), **{c: r[c] for c in cols}}
                for k, r in enumerate(d["cumulative"])]
    return (pd.DataFrame(base, columns=["model", "ce", "entropy", "tokens"]),
            pd.DataFrame(single, columns=["model", "rank", "neuron", *cols]),
            pd.DataFrame(cum, columns=["model", "k", "neurons", *cols]))


def svd_frame(svds: Mapping[str, Any], neurons: int = 1) -> pd.DataFrame:
    """{model: UnembedSVD} as a long frame for the paper's Fig. 7: model, index (of the singular
    vector), series ('singular value (S / S0)', or '|cos| with top neuron k' for the first `neurons`
    of each model's top neurons), neuron (its index; -1 for singular values), value."""
    parts = []
    for m, s in svds.items():
        sv = np.asarray(s.singular_values, dtype=float)
        idx = np.arange(sv.size)
        parts.append(pd.DataFrame({"model": m, "index": idx, "series": "singular value (S / S0)", "neuron": -1,
                                   "value": sv}))
        cos = np.asarray(s.cosines, dtype=float)
        for k, n in enumerate(list(s.neurons)[:neurons]):
            parts.append(pd.DataFrame({"model": m, "index": idx, "series": f"|cos| with top neuron {k + 1}",
                                       "neuron": int(n), "value": cos[k]}))
    if not parts:
        return pd.DataFrame(columns=["model", "index", "series", "neuron", "value"])
    return pd.concat(parts, ignore_index=True)


def nmae_head_frame(results: Mapping[str, Any]) -> pd.DataFrame:
    """{model: NMAEResult} as a long frame: model, layer, head, nmae (percent; NaN where undefined)."""
    data = [{"model": m, "layer": i, "head": h, "nmae": float("nan") if v is None else float(v)}
            for m, r in results.items() for i, row in enumerate(r.per_head) for h, v in enumerate(row)]
    return pd.DataFrame(data, columns=["model", "layer", "head", "nmae"])


def nmae_summary_frame(results: Mapping[str, Any]) -> pd.DataFrame:
    """{model: NMAEResult}: model, NMAE (%), CI low, CI high, granularity (eq. 10 and its bootstrap CI)."""
    return pd.DataFrame([{"model": m, "NMAE (%)": r.overall, "CI low": r.ci[0], "CI high": r.ci[1],
                          "granularity": r.granularity} for m, r in results.items()],
                        columns=["model", "NMAE (%)", "CI low", "CI high", "granularity"])


def job_fraction(job: int, n_jobs: int, done: int, total: int) -> float:
    """Overall progress when job `job` (0-based) of `n_jobs` is `done` of `total` through."""
    if n_jobs <= 0:
        return 1.0
    inner = min(1.0, done / total) if total > 0 else 1.0
    return min(1.0, max(0.0, (job + inner) / n_jobs))
