"""DLA: how far direct logit attribution is from the direct effect of each attention head, as the
normalised mean absolute error per head (layer x head heatmaps, one per model) and overall with its
bootstrap CI (section 5.1, appendix G): 0 for LN-free models, where DLA is exact."""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from lnfree_core.analysis.cached import dla_eval
from lnfree_core.analysis.nmae import GRANULARITIES
from pages._common.analysis_inputs import one_dataset_inputs
from pages._common.analysis_jobs import data_spec, evaluate_models
from pages._common.charts import fit_chart, model_color
from pages._common.state import PERSIST, page_setup, seed
from pages._common.ui_data.analysis_frames import nmae_head_frame, nmae_summary_frame

page_setup()


def heatmaps(df: pd.DataFrame, cap: float | None, order: list[str]) -> alt.FacetChart:
    scale = alt.Scale(scheme="viridis", domain=[0, cap] if cap else alt.Undefined, clamp=bool(cap))
    rect = alt.Chart(df).mark_rect().encode(
        x=alt.X("head:O", title="head", axis=alt.Axis(labelAngle=0)),
        y=alt.Y("layer:O", title="layer", sort="descending"),
        color=alt.Color("nmae:Q", title="NMAE (%)", scale=scale),
        tooltip=[alt.Tooltip("model:N"), alt.Tooltip("layer:O"), alt.Tooltip("head:O"),
                 alt.Tooltip("nmae:Q", format=".2f", title="NMAE (%)")],
    )
    n_layers = int(df["layer"].max()) + 1 if len(df) else 1
    n_heads = int(df["head"].max()) + 1 if len(df) else 1
    size = max(12, min(44, 300 // max(n_layers, n_heads)))
    return rect.properties(width=size * n_heads, height=size * n_layers).facet(
        column=alt.Column("model:N", title=None, sort=order)).properties(title="NMAE per attention head (%)")


def overall_chart(summary: pd.DataFrame, order: list[str]) -> alt.LayerChart:
    base = alt.Chart(summary).encode(y=alt.Y("model:N", title=None, sort=order))
    bars = base.mark_bar(opacity=0.8).encode(
        x=alt.X("NMAE (%):Q", title="overall NMAE (%), eq. 10"),
        color=model_color(order, legend=False),
        tooltip=[alt.Tooltip("model:N"), alt.Tooltip("NMAE (%):Q", format=".2f"),
                 alt.Tooltip("CI low:Q", format=".2f"), alt.Tooltip("CI high:Q", format=".2f")])
    ci = base.mark_errorbar(ticks=True, color="#111").encode(x=alt.X("CI low:Q", title=""), x2="CI high:Q")
    return fit_chart(alt.layer(bars, ci).properties(title="overall NMAE with its 95% CI"), 32 * len(summary))


st.title("DLA")
st.caption("Direct logit attribution (DLA) linearises the final LayerNorm by freezing its scale; the direct effect "
           "(DE) removes the head's output for real. Their normalised mean absolute error (NMAE) is about 50% "
           "for GPT-2 Small and exactly 0 once the LayerNorm is gone (section 5.1, appendix G).")
specs, labels, dataset, n, seq_len, split, settings = one_dataset_inputs()
c1, c2, c3 = st.columns(3)
seed("dla.granularity", "sequence")
granularity = c1.segmented_control("Granularity", list(GRANULARITIES), key="dla.granularity", **PERSIST,
                                   help="sequence: eq. 9 over each sequence's mean DLA and DE (the paper); token: "
                                        "over every predicted token.") or "sequence"
seed("dla.n_boot", 1000)
n_boot = int(c2.number_input("Bootstrap resamples", min_value=100, max_value=20_000, step=100, key="dla.n_boot",
                             **PERSIST))
seed("dla.cap", 150.0)
cap = c3.number_input("Colour scale top (%)", min_value=0.0, step=10.0, key="dla.cap", **PERSIST,
                      help="Heads above this get the top colour (0: scale to the data). Later layers of models with "
                           "LayerNorm exceed 100%.")

with st.expander("Other readings of eq. 9/10 (options; the defaults are lnfree's reading)"):
    c1, c2, c3 = st.columns(3)
    seed("dla.positions", "all")
    positions = c1.radio("Positions", ["all", "last"], key="dla.positions", **PERSIST,
                         format_func={"all": "every predicting position (default)",
                                      "last": "the last position of each sequence"}.get)
    seed("dla.pooling", "mean")
    pooling = c2.radio("Over heads", ["mean", "pooled"], key="dla.pooling", **PERSIST,
                       format_func={"mean": "mean of per-head NMAE (eq. 10, default)",
                                    "pooled": "one ratio pooled over all heads"}.get)
    seed("dla.center_unembed", False)
    center_unembed = c3.toggle("Centred W_U", key="dla.center_unembed", **PERSIST,
                               help="DLA and DE of the logit minus the mean logit (TransformerLens' center_unembed). "
                                    "A new forward pass per model.")
    st.caption("The paper's 49.07% for GPT-2 Small does not say which of these it used; they move the number.")

data = data_spec(dataset, n, seq_len, split)
results = evaluate_models(dla_eval, specs, labels, data, settings, center_unembed=bool(center_unembed))
if not results:
    st.stop()

nmaes = {labels[s]: r.nmae(granularity, positions=positions, pooling=pooling, n_boot=n_boot)
         for s, r in results.items()}
summary = nmae_summary_frame(nmaes)
cols = st.columns(min(4, len(summary)) or 1)
for i, row in enumerate(summary.itertuples(index=False)):
    cols[i % len(cols)].metric(row.model, f"{row[1]:.2f}%")
    cols[i % len(cols)].caption(f"95% CI [{row[2]:.2f}%, {row[3]:.2f}%]")
order = [labels[s] for s in specs]
st.altair_chart(heatmaps(nmae_head_frame(nmaes), float(cap) or None, order), width="content")
st.altair_chart(overall_chart(summary, order), width="stretch")
st.caption(f"NMAE_h = mean_i |DLA_ih - DE_ih| / mean_i |DE_ih| (eq. 9) for the correct next token over {n} sequences "
           f"of {seq_len} tokens ({'every predicting position' if positions == 'all' else 'last position only'}"
           f"{', centred W_U' if center_unembed else ''}); overall = "
           f"{'mean over heads (eq. 10)' if pooling == 'mean' else 'one ratio pooled over all heads'}, 95% CI from "
           f"{n_boot} bootstrap resamples of the sequences.")
st.dataframe(summary, hide_index=True, width="stretch",
             column_config={c: st.column_config.NumberColumn(format="%.4f") for c in ("NMAE (%)", "CI low", "CI high")})
st.download_button("NMAE per head (CSV)", nmae_head_frame(nmaes).to_csv(index=False), file_name="nmae_per_head.csv",
                   mime="text/csv", key="dla_dl", icon=":material/download:")
