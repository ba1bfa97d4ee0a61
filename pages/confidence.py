"""Confidence neurons: the last MLP layer's neurons by weight norm and LogitVar (CN score, top-k marked),
the per-token change in CE when the top neurons are mean-ablated (box plots, Fig. 8), the relative change
of mean CE and entropy under cumulative ablation (Fig. 9), and the singular value spectrum of the
unembedding with the top neuron's alignment (appendix H). By default every model ablates the same
neurons, chosen from the first model (the paper's neurons persist across variants)."""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from lnfree_core.analysis.cached import confidence_eval
from pages._common.analysis_inputs import one_dataset_page
from pages._common.analysis_jobs import data_spec, evaluate_models
from pages._common.charts import fit_chart, model_color
from pages._common.state import PERSIST, page_setup, seed
from pages._common.ui_data.analysis_frames import ablation_frames, cn_scatter_frame, svd_frame

page_setup()


def scatter(df: pd.DataFrame, order: list[str]) -> alt.FacetChart:
    base = alt.Chart().encode(
        x=alt.X("norm:Q", title="||w_out|| (weight norm)", scale=alt.Scale(zero=False)),
        y=alt.Y("logit_var:Q", title="LogitVar (log scale)", scale=alt.Scale(type="log")),
        tooltip=[alt.Tooltip("model:N"), alt.Tooltip("neuron:Q"), alt.Tooltip("norm:Q", format=".4g"),
                 alt.Tooltip("logit_var:Q", format=".4g"), alt.Tooltip("score:Q", format=".4g", title="CN score"),
                 alt.Tooltip("top:Q", title="rank (0: not marked)")],
    )
    others = base.transform_filter("datum.top == 0").mark_circle(size=14, opacity=0.35, color="#8b95a5")
    top = base.transform_filter("datum.top > 0").mark_circle(size=60, color="#dc2626", opacity=0.95)
    text = base.transform_filter("datum.top > 0").mark_text(align="left", dx=6, dy=-4, fontSize=11,
                                                            color="#dc2626").encode(text="neuron:Q")
    width = max(180, min(320, 840 // max(1, len(order))))
    return alt.layer(others, top, text, data=df).properties(width=width, height=240).facet(
        column=alt.Column("model:N", title=None, sort=order)).properties(
        title="confidence neurons: high weight norm, low LogitVar (the top ones by CN score in red)")


def single_chart(single: pd.DataFrame, value: str, title: str, order: list[str]) -> alt.Chart:
    chart = (
        alt.Chart(single)
        .mark_bar()
        .encode(
            x=alt.X("rank:O", title="ablated neuron (rank by CN score)", axis=alt.Axis(labelAngle=0)),
            xOffset=alt.XOffset("model:N", sort=order),
            y=alt.Y(f"{value}:Q", title=title),
            color=model_color(order),
            tooltip=[alt.Tooltip("model:N"), alt.Tooltip("neuron:N"), alt.Tooltip("delta_ce:Q", format="+.5f"),
                     alt.Tooltip("delta_entropy:Q", format="+.5f"), alt.Tooltip("rel_ce:Q", format="+.3%"),
                     alt.Tooltip("rel_entropy:Q", format="+.3%")],
        )
        .properties(title=title)
    )
    return fit_chart(chart, 220)


def cumulative_chart(cum: pd.DataFrame, value: str, title: str, order: list[str]) -> alt.Chart:
    chart = (
        alt.Chart(cum)
        .mark_line(point=True)
        .encode(
            x=alt.X("k:O", title="top-k neurons ablated together", axis=alt.Axis(labelAngle=0)),
            y=alt.Y(f"{value}:Q", title=title, axis=alt.Axis(format="%")),
            color=model_color(order),
            tooltip=[alt.Tooltip("model:N"), alt.Tooltip("neurons:N"), alt.Tooltip(f"{value}:Q", format="+.3%")],
        )
        .properties(title=title)
    )
    return fit_chart(chart, 220)


def box_chart(box: pd.DataFrame, order: list[str]) -> alt.LayerChart:
    """Pre-computed box plots of per-token |dCE| (whiskers 1.5 IQR, clipped to the data), one per model."""
    base = alt.Chart(box).encode(y=alt.Y("model:N", title=None, sort=order))
    whisker = base.mark_rule(color="#555").encode(x=alt.X("whisker_lo:Q", title="per-token |change in CE| (nats)"),
                                                  x2="whisker_hi:Q")
    boxes = base.mark_bar(size=16, opacity=0.8).encode(
        x="q1:Q", x2="q3:Q", color=model_color(order, legend=False),
        tooltip=[alt.Tooltip("model:N")] + [alt.Tooltip(f"{c}:Q", format=".4g")
                                            for c in ("mean", "median", "q1", "q3", "whisker_hi", "max", "tokens")])
    median = base.mark_tick(color="white", size=16, thickness=2).encode(x="median:Q")
    return fit_chart(alt.layer(whisker, boxes, median).properties(
        title="per-token |change in CE| when the ablated neurons are mean-ablated together"), 36 * len(box) + 40)


def spectrum_chart(df: pd.DataFrame, log: bool, order: list[str]) -> alt.Chart:
    data = df[df["value"] > 0] if log else df
    chart = (
        alt.Chart(data)
        .mark_line(strokeWidth=1.4)
        .encode(
            x=alt.X("index:Q", title="singular vector (by singular value, descending)", scale=alt.Scale(nice=False)),
            y=alt.Y("value:Q", title=None, scale=alt.Scale(type="log" if log else "linear")),
            color=model_color(order),
            strokeDash=alt.StrokeDash("series:N", legend=alt.Legend(title=None, orient="top", symbolType="stroke")),
            tooltip=[alt.Tooltip("model:N"), alt.Tooltip("series:N"), alt.Tooltip("neuron:Q"),
                     alt.Tooltip("index:Q"), alt.Tooltip("value:Q", format=".4g")],
        )
        .properties(title="unembedding spectrum S / S0 (solid) and the top neurons' |cos| with each left singular "
                          "vector (dashed)")
    )
    return fit_chart(chart, 280)


specs, labels, dataset, n, seq_len, split, settings = one_dataset_page(
    "Confidence neurons",
    "Confidence neurons of the last MLP layer write large vectors into the unembedding's near-null space: "
    "through the final LayerNorm they scale all logits alike and so regulate the output entropy. Without "
    "LayerNorm they keep their weights but lose their effect (appendix H).",
    "**Demo models** have no confidence neurons: on 32 x 128 pile-filtered-demo tokens, ablating the original's "
    "top-3 changes entropy by less than 0.01% in the default `full` build and by +0.07% (CE +0.02%) in the "
    "`findings` build (the paper's GPT-2 Medium: more than -3% for 0.1% of CE, and no change LN-free), and no "
    "single last-layer neuron of the `findings` original moves entropy by more than 0.4% when ablated alone, so "
    "their ablation charts show noise. GPT-2 from the Hub shows the paper's effect; "
    "`python -m lnfree_core demo findings` measures the built demo.")
NEURON_CHOICES = {"same": "the first model's top-k in every model (paper)", "own": "each model's own top-k"}
seed("cn.neurons", "same")
which = st.radio("Neurons ablated", list(NEURON_CHOICES), key="cn.neurons", **PERSIST,
                 format_func=NEURON_CHOICES.get, horizontal=True,
                 help="The paper ablates the same neurons in every variant (e.g. 584, 2123, 2870 in GPT-2 Small), "
                      "chosen from the original model: put it first.")
c1, c2, c3, c4 = st.columns(4)
seed("cn.top_k", 3)
top_k = int(c1.number_input("Neurons to ablate", min_value=1, max_value=32, key="cn.top_k", **PERSIST,
                            help="The top-k neurons by CN score are mean-ablated one by one and cumulatively "
                                 "(the paper: 3)."))
seed("cn.marked", 7)
marked = int(c2.number_input("Neurons to mark", min_value=1, max_value=100, key="cn.marked", **PERSIST,
                             help="Highlighted in the scatter plot (the paper: top 7)."))
seed("cn.fold_ln", True)
fold_ln = c3.toggle("Fold LN_f's gain into W_U", key="cn.fold_ln", **PERSIST,
                    help="W_U <- diag(gamma_f) W_U before scoring (as TransformerLens does).")
seed("cn.center", True)
center = c4.toggle("Center the weights", key="cn.center", **PERSIST,
                   help="Subtract the mean of each w_out (over d_model) and of W_U (over the vocabulary).")

data = data_spec(dataset, n, seq_len, split)
options = dict(top_k=top_k, fold_ln=fold_ln, center=center)
if which == "same" and len(specs) > 1:
    first = evaluate_models(confidence_eval, specs[:1], labels, data, settings, **options)
    if not first:
        st.stop()
    chosen = first[specs[0]].top
    rest = evaluate_models(confidence_eval, specs[1:], labels, data, settings, neurons=chosen, **options)
    results = {**first, **rest}
else:
    results = evaluate_models(confidence_eval, specs, labels, data, settings, **options)
if not results:
    st.stop()

st.header("CN scores")
scores = pd.concat([cn_scatter_frame(labels[s], r.scores, r.scores.top(marked)) for s, r in results.items()],
                   ignore_index=True)
order = [labels[s] for s in specs]
st.altair_chart(scatter(scores, order), width="content")
st.caption("CN(i) = ||w_out,i|| / LogitVar(w_out,i) (eq. 11, 12) for every neuron of the last MLP layer "
           f"(layer {next(iter(results.values())).entry.meta['layer']}).")
with st.expander("Top neurons by CN score"):
    st.dataframe(scores[scores["top"] > 0].sort_values(["model", "top"]), hide_index=True, width="stretch")

st.header("Mean ablation")
base, single, cum = ablation_frames({labels[s]: r.entry.meta["ablation"] for s, r in results.items()})
cols = st.columns(len(base) if 0 < len(base) <= 4 else 4)
for i, row in enumerate(base.itertuples(index=False)):
    cols[i % len(cols)].metric(row.model, f"CE {row.ce:.4f}")
    cols[i % len(cols)].caption(f"entropy {row.entropy:.4f}, no ablation ({n} sequences of {seq_len} tokens, "
                                f"{row.tokens} scored tokens)")
ablated = {labels[s]: r.ablated for s, r in results.items()}
st.caption("Ablated: " + "; ".join(f"{m}: {', '.join(map(str, v))}" for m, v in ablated.items()))
box = pd.DataFrame([{"model": labels[s], **r.entry.meta["ablation"]["abs_delta_ce"]} for s, r in results.items()
                    if r.entry.meta["ablation"].get("abs_delta_ce")])
if not box.empty:
    st.altair_chart(box_chart(box, order), width="stretch")
    st.caption("Fig. 8 of the paper: the distribution over tokens of |CE with the neurons ablated - CE|. The change "
               "of the mean CE below can be far smaller: per-token changes of both signs cancel in it.")
c1, c2 = st.columns(2)
c1.altair_chart(single_chart(single, "delta_ce", "change in CE", order), width="stretch")
c2.altair_chart(single_chart(single, "delta_entropy", "change in entropy", order), width="stretch")
st.subheader("Cumulative ablation")
c1, c2 = st.columns(2)
c1.altair_chart(cumulative_chart(cum, "rel_ce", "relative change in CE", order), width="stretch")
c2.altair_chart(cumulative_chart(cum, "rel_entropy", "relative change in entropy", order), width="stretch")
with st.expander("Numbers"):
    st.dataframe(single, hide_index=True, width="stretch")
    st.dataframe(cum, hide_index=True, width="stretch")
    if not box.empty:
        st.dataframe(box, hide_index=True, width="stretch")
st.caption("Each neuron's activation is replaced by its mean over all positions of these sequences; CE and entropy "
           "are averaged over the same predicting positions (Fig. 8 and 9 of the paper).")

st.header("Unembedding spectrum")
c1, c2 = st.columns(2)
seed("cn.svd_neurons", 1)
st.session_state["cn.svd_neurons"] = min(int(st.session_state["cn.svd_neurons"]), top_k)
n_cos = int(c1.number_input("Top neurons shown", min_value=1, max_value=top_k, key="cn.svd_neurons", **PERSIST))
seed("cn.svd_log", True)
log = c2.toggle("Log scale", key="cn.svd_log", **PERSIST)
st.altair_chart(spectrum_chart(svd_frame({labels[s]: r.svd for s, r in results.items()}, n_cos), log, order),
                width="stretch")
