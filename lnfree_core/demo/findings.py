"""The paper's findings measured on a built demo suite: attention sinks, first-token norms, confidence neurons.

For each demo model, on the first ``n_sequences`` rows of ``pile-filtered-demo`` (the paper measures
on The Pile-filtered), with lnfree's analyses (:mod:`lnfree_core.analysis`):

* ``sink_rate_queries``: the paper's number (section 5.3, as the authors' code counts it, and as the First
  tokens page shows it): the share of (sequence, layer, head, query q) whose attention weight on
  position 0 exceeds ``threshold`` (0.3), query 0 included (A[0, 0] = 1 always counts),
      rate = 1/(n L H T) sum_{i,l,h,q} [A_{i,l,h}[q, 0] > threshold]
  (:func:`lnfree_core.analysis.sinks.sink_rate_from_counts`); ``sink_rate_uniform`` is what heads
  attending uniformly over the earlier positions would score (3/T at 0.3: 2.3% for the demo's 128 tokens),
  the floor the rate is read against (:func:`lnfree_core.analysis.sinks.uniform_rate`);
* ``sink_rate_heads``: :func:`lnfree_core.analysis.sinks.sink_rate`, lnfree's earlier per-head
  convention (a (layer, head) sinks on a sequence when its attention on position 0, averaged over
  the queries q >= 1, is at least ``threshold``);
* ``norm_ratios``: per residual point (the input of each block, then of the final norm), the mean
  first-position centred norm ||x - mean_d(x)|| over the mean centred norm of the other positions
  (:mod:`lnfree_core.analysis.first_token`, the paper's Fig. 3 norm and the First tokens page's default);
  ``norm_ratio`` is the largest;
* ``ablation``: the top-3 confidence neurons of the last MLP layer (eq. 11-12) mean-ablated together
  (:mod:`lnfree_core.analysis.neuron_ablation`): relative change of mean CE and of mean entropy, as in
  the paper's Fig. 9 (original GPT-2 Medium: entropy -3%, CE 0.1%).

``python -m lnfree_core demo findings`` prints the table.
"""

from __future__ import annotations

import os

import numpy as np
from torch import nn

from lnfree_core.analysis.confidence import confidence_scores
from lnfree_core.analysis.first_token import SINK_THRESHOLDS, first_token_stats
from lnfree_core.analysis.neuron_ablation import ablate_neurons
from lnfree_core.analysis.sinks import sink_rate, sink_rate_from_counts
from lnfree_core.models import load_model

from .paths import MODEL_NAMES, demo_dataset_path, demo_model_path
from .tokens import read_rows

DEFAULT_SEQUENCES = 32
SINK_THRESHOLD = 0.3


def model_findings(model: nn.Module, tokens, *, threshold: float = SINK_THRESHOLD, top_k: int = 3) -> dict:
    """Sink rates, first-token norm ratios and the confidence-neuron ablation of one model (module docstring)."""
    st = first_token_stats(model, tokens, batch_size=8)
    prof = st.profile("centred")
    n_layers = len(prof["points"]) // 3
    keep = [f"resid_pre.{l}" for l in range(n_layers)] + [f"resid_post.{n_layers - 1}"]  # block inputs, final norm's
    ratios = [float(prof["ratio"][prof["points"].index(p)]) for p in keep]
    top = confidence_scores(model).top(top_k)
    cum = ablate_neurons(model, tokens, top, batch_size=8).to_dict()["cumulative"][-1]
    queries = sink_rate_from_counts(st.sink_counts, st.n_queries, SINK_THRESHOLDS, threshold)
    return {"sink_rate_queries": queries.rate, "sink_rate_uniform": queries.uniform,
            "sink_rate_heads": sink_rate(st.first_attn, threshold, n_boot=100).rate,
            "norm_ratios": ratios, "norm_ratio": max(ratios), "neurons": top,
            "rel_entropy": cum["rel_entropy"], "rel_ce": cum["rel_ce"]}


def demo_findings(root: str | os.PathLike | None = None, n_sequences: int = DEFAULT_SEQUENCES,
                  threshold: float = SINK_THRESHOLD) -> dict:
    """{model name: model_findings} for the built demo models, on ``pile-filtered-demo``'s first rows."""
    rows = read_rows(demo_dataset_path("pile-filtered-demo", root, must_exist=True) / "train.parquet")
    tokens = np.asarray(rows[:n_sequences])
    out = {}
    for name in MODEL_NAMES:
        model = load_model(str(demo_model_path(name, root)), device="cpu").model
        out[name] = model_findings(model, tokens, threshold=threshold)
    return {"n_sequences": int(tokens.shape[0]), "seq_len": int(tokens.shape[1]), "threshold": threshold,
            "models": out}


def format_findings(f: dict) -> str:
    """The findings as the README's table (one column per model)."""
    names = list(f["models"])
    rows = [
        (f"attention sink rate, (layer, head, query) > {f['threshold']:g} (the paper's)",
         lambda r: f"{100 * r['sink_rate_queries']:.1f}%"),
        ("the same for heads attending uniformly (the floor)", lambda r: f"{100 * r['sink_rate_uniform']:.1f}%"),
        (f"attention sink rate, (layer, head) >= {f['threshold']:g} averaged over queries",
         lambda r: f"{100 * r['sink_rate_heads']:.1f}%"),
        ("first-token / other-token residual norm (centred)", lambda r: "–".join(
            f"{v:.2f}" for v in (min(r["norm_ratios"]), max(r["norm_ratios"])))),
        ("top-3 confidence-neuron ablation: entropy change", lambda r: f"{100 * r['rel_entropy']:+.2f}%"),
        ("top-3 confidence-neuron ablation: CE change", lambda r: f"{100 * r['rel_ce']:+.3f}%"),
    ]
    lines = [f"on pile-filtered-demo, {f['n_sequences']} x {f['seq_len']} tokens",
             "| finding | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    lines += ["| " + label + " | " + " | ".join(fmt(f["models"][n]) for n in names) + " |" for label, fmt in rows]
    return "\n".join(lines)
