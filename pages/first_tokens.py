"""First tokens: the residual-stream norm at position 0 against the other positions at resid_pre, resid_mid
and resid_post of every layer (centred by default, as the paper's Fig. 3), for several models on one
chart, and the attention sink rate with its CI (section 5.3)."""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from lnfree_core.analysis.cached import first_token_eval
from lnfree_core.analysis.first_token import SINK_THRESHOLDS
from lnfree_core.analysis.sinks import DEFAULT_SINK_THRESHOLD
from pages._common.analysis_inputs import one_dataset_page
from pages._common.analysis_jobs import data_spec, evaluate_models
from pages._common.charts import fit_chart, model_color
from pages._common.state import PERSIST, page_setup, seed
from pages._common.ui_data.analysis_frames import norm_profile_frame, sink_frames

page_setup()


def _x(df: pd.DataFrame) -> alt.X:
    order = df.drop_duplicates("point").sort_values("layer")["point"].tolist()
    return alt.X("point:O", sort=order, title="residual stream point (pre.l: before block l, mid.l: after its "
                 "attention, post.l: after block l)",
                 axis=alt.Axis(labelAngle=0, labelExpr="replace(datum.label, 'resid_', '')"))


def norm_chart(df: pd.DataFrame, log: bool, order: list[str]) -> alt.Chart:
    chart = (
        alt.Chart(df)
        .mark_line(point=True, strokeWidth=1.8)
        .encode(
            x=_x(df),
            y=alt.Y("norm:Q", title="mean L2 norm", scale=alt.Scale(type="log" if log else "linear")),
            color=model_color(order),
            strokeDash=alt.StrokeDash("position:N", legend=alt.Legend(title=None, orient="top", symbolType="stroke"),
                                      sort=["first token", "other tokens"]),
            tooltip=[alt.Tooltip("model:N"), alt.Tooltip("point:N"), alt.Tooltip("position:N"),
                     alt.Tooltip("norm:Q", format=".4g"), alt.Tooltip("ratio:Q", format=".3g", title="first / other")],
        )
        .properties(title="residual norm at position 0 (solid) vs the mean over the other positions (dashed)")
    )
    return fit_chart(chart, 280)


def ratio_chart(df: pd.DataFrame, order: list[str]) -> alt.Chart:
    data = df[df["position"] == "first token"]
    chart = (
        alt.Chart(data)
        .mark_line(point=True, strokeWidth=1.5)
        .encode(
            x=_x(data),
            y=alt.Y("ratio:Q", title="first / other", scale=alt.Scale(type="log")),
            color=model_color(order),
            tooltip=[alt.Tooltip("model:N"), alt.Tooltip("point:N"), alt.Tooltip("ratio:Q", format=".3g")],
        )
        .properties(title="how many times larger the first token's norm is")
    )
    return fit_chart(chart, 180)


def sink_chart(overall: pd.DataFrame, order: list[str]) -> alt.LayerChart:
    base = alt.Chart(overall).encode(y=alt.Y("model:N", title=None, sort=order))
    bars = base.mark_bar(opacity=0.8).encode(
        x=alt.X("rate:Q", title="sink rate", axis=alt.Axis(format="%"), scale=alt.Scale(domain=[0, 1])),
        color=model_color(order, legend=False),
        tooltip=[alt.Tooltip("model:N"), alt.Tooltip("rate:Q", format=".1%"),
                 alt.Tooltip("ci_lo:Q", format=".1%", title="CI low"), alt.Tooltip("ci_hi:Q", format=".1%", title="CI high")])
    ci = base.mark_errorbar(ticks=True, color="#111").encode(x=alt.X("ci_lo:Q", title=""), x2="ci_hi:Q")
    layers = [bars, ci]
    floor = overall.dropna(subset=["uniform"]).drop_duplicates("uniform")
    if len(floor):  # the rate of heads attending uniformly (sinks.uniform_rate): dashed
        layers.append(alt.Chart(floor).mark_rule(strokeDash=[4, 3], color="#555").encode(
            x="uniform:Q", tooltip=[alt.Tooltip("uniform:Q", format=".1%", title="uniform-attention floor")]))
    return fit_chart(alt.layer(*layers).properties(title="attention sink rate with its interval (dashed: the rate "
                                                         "of uniform attention)"), 32 * len(overall))


def per_layer_chart(per_layer: pd.DataFrame, order: list[str]) -> alt.Chart:
    chart = (
        alt.Chart(per_layer)
        .mark_line(point=True)
        .encode(
            x=alt.X("layer:O", title="layer", axis=alt.Axis(labelAngle=0)),
            y=alt.Y("rate:Q", title="sink rate", axis=alt.Axis(format="%"), scale=alt.Scale(domain=[0, 1])),
            color=model_color(order),
            tooltip=[alt.Tooltip("model:N"), alt.Tooltip("layer:O"), alt.Tooltip("rate:Q", format=".1%")],
        )
        .properties(title="sink rate per layer")
    )
    return fit_chart(chart, 200)


specs, labels, dataset, n, seq_len, split, settings = one_dataset_page(
    "First tokens",
    "In models with LayerNorm the first position's residual norm grows far above the others' and many "
    "heads park their attention on it (attention sinks); the paper finds LN-free models keep moderate "
    "first-token norms and fewer sinks (section 5.3).",
    "**Demo models**: the default `full` build (3 layers x 128, 0.6M tokens of pretraining) is too small and "
    "too briefly trained to show this: on 32 x 128 pile-filtered-demo tokens its original sinks in 4.5% of "
    "(layer, head, query) triples (the paper's GPT-2: 55.3%, 45.3% once LN-free) and its first-token norm is "
    "0.86-1.26x the other tokens'. The `findings` build (`demo build --size findings`, which fine-tunes a shipped "
    "original pretrained for 54 minutes) shows the norm finding: 1.26-2.32x in the original, 1.00-1.18x LN-free "
    "(the paper: far above 1, about 1 LN-free); its sinks (8%, against a floor of 2.3% for heads that attend "
    "uniformly over 128 tokens) do not shrink with LN removal. GPT-2 from the "
    "Hub shows both; `python -m lnfree_core demo findings` measures the built demo.")
NORM_CHOICES = {"centred": "centred ||x - mean(x)|| (paper)", "raw": "raw ||x||"}
POINT_CHOICES = {"resid_pre": "resid_pre", "resid_mid": "resid_mid", "resid_post": "resid_post"}
SINK_DEFS = {"query": "per (layer, head, query), query 0 counted (paper)", "head-mean": "per head, mean over queries > 0"}
CI_CHOICES = {"batches": "spread over batches of 8 sequences (paper)", "bootstrap": "bootstrap over sequences"}
c1, c2, c3 = st.columns(3)
seed("first.norm", "centred")
norm_kind = c1.radio("Norm", list(NORM_CHOICES), key="first.norm", **PERSIST, format_func=NORM_CHOICES.get,
                     help="The paper's norms are of weight-centred models, whose residual stream has no mean "
                          "component: ||x - mean(x)||. Raw: the norm of the residual as the model holds it.")
seed("first.points", list(POINT_CHOICES))
kinds = c2.multiselect("Residual points", list(POINT_CHOICES), key="first.points", **PERSIST) or list(POINT_CHOICES)
seed("first.log", True)
log = c3.toggle("Log scale", key="first.log", **PERSIST)
c1, c2, c3, c4 = st.columns(4)
seed("first.threshold", DEFAULT_SINK_THRESHOLD)
threshold = c1.select_slider("Sink threshold", options=list(SINK_THRESHOLDS), key="first.threshold", **PERSIST,
                             help="The first token is a sink for a query when it draws more than this share of the "
                                  "query's attention (the paper: 0.3).")
seed("first.sink_def", "query")
sink_def = c2.radio("Sink rate counts", list(SINK_DEFS), key="first.sink_def", **PERSIST,
                    format_func=SINK_DEFS.get)
seed("first.ci", "batches")
ci_method = c3.radio("Interval", list(CI_CHOICES), key="first.ci", **PERSIST, format_func=CI_CHOICES.get)
seed("first.n_boot", 1000)
n_boot = c4.number_input("Bootstrap resamples", min_value=100, max_value=20_000, step=100, key="first.n_boot",
                         **PERSIST, disabled=ci_method != "bootstrap")

data = data_spec(dataset, n, seq_len, split)
results = evaluate_models(first_token_eval, specs, labels, data, settings)
if not results:
    st.stop()

profiles = {labels[s]: r.stats.profile(norm_kind, points=tuple(kinds)) for s, r in results.items()}
rates = {labels[s]: r.sink_rate(float(threshold), definition=sink_def, ci_method=ci_method, n_boot=int(n_boot))
         for s, r in results.items()}
norms = norm_profile_frame(profiles)
overall, per_layer = sink_frames(rates)

st.header("Residual norms")
order = [labels[s] for s in specs]
st.altair_chart(norm_chart(norms, log, order), width="stretch")
st.altair_chart(ratio_chart(norms, order), width="stretch")
st.caption(f"{NORM_CHOICES[norm_kind].split(' (')[0].capitalize()} norms. The paper's Fig. 3 reads first-token "
           "growth off resid_mid and resid_post of every layer (e.g. the jump at layer 3's attention).")
with st.expander("Numbers"):
    st.dataframe(norms.pivot_table(index=["model", "layer", "point"], columns="position", values="norm").reset_index(),
                 hide_index=True, width="stretch")

st.header("Attention sinks")
cols = st.columns(min(4, len(overall)) or 1)
for i, row in enumerate(overall.itertuples(index=False)):
    cols[i % len(cols)].metric(row.model, f"{row.rate:.1%}")
    cols[i % len(cols)].caption(f"[{row.ci_lo:.1%}, {row.ci_hi:.1%}]")
st.altair_chart(sink_chart(overall, order), width="stretch")
st.altair_chart(per_layer_chart(per_layer, order), width="stretch")
if sink_def == "query":
    what = (f"Share of (layer, head, query position) triples in which the first token draws more than {threshold:g} "
            "of the query's attention (query 0, which can only attend to itself, counts, as in the paper's code)")
else:
    what = (f"Share of (layer, head) pairs whose attention to the first token, averaged over the query positions "
            f"after it, is at least {threshold:g}")
first_rate = next(iter(rates.values()))
floor = ("" if first_rate.uniform is None else
         f" Heads that attend uniformly over the earlier positions, with no preference for the first token, would "
         f"score {first_rate.uniform:.1%} on these sequences: the floor to read a rate against"
         + (" (early queries have few positions to attend to; the paper's 55.3% was measured at up to 512 tokens, "
            "where the floor is 0.6%)." if sink_def == "query" else "."))
st.caption(f"{what}, per sequence and then averaged over the {n} sequences. Interval: {first_rate.ci_label}.{floor}")
st.download_button("Sink rates (CSV)", overall.to_csv(index=False), file_name="sink_rates.csv", mime="text/csv",
                   key="first_dl", icon=":material/download:")
