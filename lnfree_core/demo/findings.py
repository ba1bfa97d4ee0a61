"""The paper's findings measured on a built demo suite: attention sinks, first-token norms, confidence neurons.

For each demo model, on the first ``n_sequences`` rows of ``pile-filtered-demo`` (the paper measures
on The Pile-filtered), with lnfree's analyses (:mod:`lnfree_core.analysis`):

* ``sink_rate_queries``: the paper's definition (section 5.3): the share of (sequence, layer, head,
  query position q >= 1) whose attention weight on position 0 exceeds ``threshold`` (0.3),
      rate = 1/(n L H (T-1)) sum_{i,l,h,q>=1} [A_{i,l,h}[q, 0] > threshold];
  query 0 is left out (it can attend only to itself);
* ``sink_rate_heads``: :func:`lnfree_core.analysis.sinks.sink_rate` as this version of lnfree
  defines it (a (layer, head) sinks on a sequence when its attention on position 0, averaged over
  the queries q >= 1, is at least ``threshold``);
* ``norm_ratios``: per residual point (the input of each block, then of the final norm), the mean
  first-position raw norm ||x|| over the mean norm of the other positions
  (:mod:`lnfree_core.analysis.first_token`; its pages default to the paper's centred norm);
  ``norm_ratio`` is the largest;
* ``ablation``: the top-3 confidence neurons of the last MLP layer (eq. 11-12) mean-ablated together
  (:mod:`lnfree_core.analysis.neuron_ablation`): relative change of mean CE and of mean entropy, as in
  the paper's Fig. 9 (original GPT-2 Medium: entropy -3%, CE 0.1%).

``python -m lnfree_core demo findings`` prints the table.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from torch import nn

from .paths import MODEL_NAMES, demo_dataset_path, demo_model_path

DEFAULT_SEQUENCES = 32
SINK_THRESHOLD = 0.3


@torch.no_grad()
def query_sink_rate(model: nn.Module, tokens, threshold: float = SINK_THRESHOLD, batch_size: int = 8) -> float:
    """Share of (sequence, layer, head, query q >= 1) with attention on position 0 above ``threshold``."""
    from lnfree_core.method.adapters import adapter_for
    from lnfree_core.analysis.hooks import eager_attention, hooks
    from lnfree_core.analysis.runtime import as_tokens, iter_batches, model_device

    tokens = as_tokens(tokens)
    ad = adapter_for(model)
    count = {"sink": 0, "all": 0}

    def post(module, args, kwargs, output):
        a0 = output[1][:, :, 1:, 0]  # [batch, head, query - 1]: attention of queries q >= 1 on position 0
        count["sink"] += int((a0.float() > threshold).sum())
        count["all"] += a0.numel()

    model.eval()
    with eager_attention(model), hooks(post=[(ad.attention(model, l), post) for l in range(ad.n_layers(model))]):
        for _, _, x in iter_batches(tokens, batch_size, model_device(model)):
            model(input_ids=x, use_cache=False)
    return count["sink"] / count["all"]


def model_findings(model: nn.Module, tokens, *, threshold: float = SINK_THRESHOLD, top_k: int = 3) -> dict:
    """Sink rates, first-token norm ratios and the confidence-neuron ablation of one model (module docstring)."""
    from lnfree_core.analysis.confidence import confidence_scores
    from lnfree_core.analysis.first_token import first_token_stats
    from lnfree_core.analysis.neuron_ablation import ablate_neurons
    from lnfree_core.analysis.sinks import sink_rate

    st = first_token_stats(model, tokens, batch_size=8)
    prof = st.profile("raw")  # raw ||x||, as the reference in tests/_findings_ref.py
    n_layers = len(prof["points"]) // 3
    keep = [f"resid_pre.{l}" for l in range(n_layers)] + [f"resid_post.{n_layers - 1}"]  # block inputs, final norm's
    ratios = [float(prof["ratio"][prof["points"].index(p)]) for p in keep]
    top = confidence_scores(model).top(top_k)
    cum = ablate_neurons(model, tokens, top, batch_size=8).to_dict()["cumulative"][-1]
    return {"sink_rate_queries": query_sink_rate(model, tokens, threshold),
            "sink_rate_heads": sink_rate(st.first_attn, threshold, n_boot=100).rate,
            "norm_ratios": ratios, "norm_ratio": max(ratios), "neurons": top,
            "rel_entropy": cum["rel_entropy"], "rel_ce": cum["rel_ce"]}


def demo_findings(root: str | os.PathLike | None = None, n_sequences: int = DEFAULT_SEQUENCES,
                  threshold: float = SINK_THRESHOLD) -> dict:
    """{model name: model_findings} for the built demo models, on ``pile-filtered-demo``'s first rows."""
    from lnfree_core.models import load_model

    from .tokens import read_rows

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
        (f"attention sink rate, (layer, head, query) > {f['threshold']:g}",
         lambda r: f"{100 * r['sink_rate_queries']:.1f}%"),
        (f"attention sink rate, (layer, head) >= {f['threshold']:g} averaged over queries",
         lambda r: f"{100 * r['sink_rate_heads']:.1f}%"),
        ("first-token / other-token residual norm", lambda r: "–".join(
            f"{v:.2f}" for v in (min(r["norm_ratios"]), max(r["norm_ratios"])))),
        ("top-3 confidence-neuron ablation: entropy change", lambda r: f"{100 * r['rel_entropy']:+.2f}%"),
        ("top-3 confidence-neuron ablation: CE change", lambda r: f"{100 * r['rel_ce']:+.3f}%"),
    ]
    lines = [f"on pile-filtered-demo, {f['n_sequences']} x {f['seq_len']} tokens",
             "| finding | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    lines += ["| " + label + " | " + " | ".join(fmt(f["models"][n]) for n in names) + " |" for label, fmt in rows]
    return "\n".join(lines)
