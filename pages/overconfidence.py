"""Overconfidence: mean entropy of the next-token distribution against mean CE per model, a reliability
diagram (top-token confidence vs accuracy) with the expected calibration error, and entropy / CE after
mean-ablating the top confidence neurons of the models with LN (sections 5.4, 6.1; appendix H)."""

from __future__ import annotations

import json

import altair as alt
import pandas as pd
import streamlit as st

from lnfree_core.analysis.cached import confidence_eval
from lnfree_core.analysis.cached_experiments import ablation_gap, overconfidence_eval
from pages._common.analysis_inputs import model_labels, models_and_data
from pages._common.analysis_jobs import (
    data_spec, dataset_labels, evaluate_models, model_dataset_jobs, run_jobs, run_options,
)
from pages._common.charts import fit_chart, model_color
from pages._common.state import PERSIST, page_setup, seed

page_setup()

st.title("Overconfidence")
st.caption("A calibrated model's mean entropy equals its mean cross-entropy; below it, the model is more confident "
           "than it is right. The paper finds every LN-free model overconfident, and that disabled confidence "
           "neurons explain only part of it (sections 5.4, 6.1, appendix H).")
specs, datasets, n, seq_len, split, settings = models_and_data(multi_data=True)
if not specs or not datasets:
    st.info("Choose at least one model and a dataset above.", icon=":material/info:")
    st.stop()
labels = model_labels(specs)
ds_labels = dataset_labels(datasets)
c1, c2 = st.columns(2)
seed("oc.bins", 15)
bins = int(c1.number_input("Reliability bins", min_value=2, max_value=100, key="oc.bins", **PERSIST))
seed("oc.top_k", 3)
top_k = int(c2.number_input("Confidence neurons to ablate", min_value=0, max_value=32, key="oc.top_k",
                            **PERSIST, help="Mean-ablated together in each model with LN (0: none; the "
                                                   "paper: 3)."))
opts = {**run_options(settings), "precision": "fp32"}  # fp32 as the ablation: entropies comparable
all_results = run_jobs(model_dataset_jobs(
    specs, datasets, labels, ds_labels, n, seq_len, split,
    lambda spec, data, progress: overconfidence_eval(spec, data, progress=progress, **opts)))
if not all_results:
    st.stop()
table = pd.DataFrame([{"model": labels[s], "dataset": ds_labels[ds], "ln_free": r.ln_free, **r.summary(bins).to_dict()}
                      for (s, ds), r in all_results.items()])

st.header("Entropy vs cross-entropy")
st.dataframe(table, hide_index=True, width="stretch")
st.caption("Mean over every predicting position; gap = mean CE - mean entropy (> 0: more confident than right).")
computed = [ds for ds in datasets if any((s, ds) in all_results for s in specs)]
if st.session_state.get("oc.dataset") not in computed:
    st.session_state.pop("oc.dataset", None)
dataset = st.selectbox("Dataset of the charts below", computed, key="oc.dataset", format_func=ds_labels.get)
data = data_spec(dataset, n, seq_len, split)
results = {s: all_results[(s, dataset)] for s in specs if (s, dataset) in all_results}
order = [labels[s] for s in results]
summ = {s: r.summary(bins) for s, r in results.items()}
cols = st.columns(min(4, len(results)))
for i, s in enumerate(results):
    cols[i % len(cols)].metric(labels[s], f"H {summ[s].mean_entropy:.4f}", f"CE - H {summ[s].gap:+.4f}",
                               delta_color="off")
long = pd.DataFrame([{"model": labels[s], "quantity": q, "nats": getattr(summ[s], q)}
                     for s in results for q in ("mean_ce", "mean_entropy")])
st.altair_chart(fit_chart(alt.Chart(long).mark_bar().encode(
    x=alt.X("quantity:N", title=None), xOffset=alt.XOffset("model:N", sort=order), y=alt.Y("nats:Q"),
    color=model_color(order), tooltip=["model", "quantity", alt.Tooltip("nats:Q", format=".4f")]).properties(
    title=f"mean cross-entropy and mean entropy (nats) on {ds_labels[dataset]}"), 220), width="stretch")

st.header("Reliability diagram")
rel_rows = []
for s, r in results.items():
    rel = r.reliability(bins)
    for m in range(bins):
        if rel.count[m] > 0:
            rel_rows.append({"model": labels[s], "bin": f"{rel.edges[m]:.2f}-{rel.edges[m + 1]:.2f}",
                             "confidence": float(rel.confidence[m]), "accuracy": float(rel.accuracy[m]),
                             "count": int(rel.count[m])})
rel_df = pd.DataFrame(rel_rows)
diag = alt.Chart(pd.DataFrame({"x": [0.0, 1.0], "y": [0.0, 1.0]})).mark_line(color="#999", strokeDash=[4, 4]).encode(
    x="x:Q", y="y:Q")
points = alt.Chart(rel_df).mark_line(point=True).encode(
    x=alt.X("confidence:Q", title="mean top-token confidence", scale=alt.Scale(domain=[0, 1])),
    y=alt.Y("accuracy:Q", title="accuracy", scale=alt.Scale(domain=[0, 1])), color=model_color(order),
    tooltip=["model", "bin", alt.Tooltip("confidence:Q", format=".3f"), alt.Tooltip("accuracy:Q", format=".3f"),
             "count"])
st.altair_chart(fit_chart(alt.layer(diag, points).properties(
    title="reliability: accuracy per confidence bin (on the diagonal: calibrated)"), 300), width="stretch")
st.caption("ECE = sum over bins of (share of tokens) x |accuracy - mean confidence|: "
           + ", ".join(f"{labels[s]} {summ[s].ece:.4f}" for s in results) + ".")

gaps = []
if top_k:
    st.header("After ablating the top confidence neurons")
    with_ln = [s for s in results if not results[s].ln_free]
    free = [s for s in results if results[s].ln_free]
    abl = evaluate_models(confidence_eval, with_ln, labels, data, settings, top_k=top_k, precision="fp32")
    st.caption(f"On {ds_labels[dataset]}.")
    for s, r in abl.items():
        a = r.entry.meta["ablation"]
        for f in free:
            gaps.append({"model with LN": labels[s], "LN-free model": labels[f],
                         **ablation_gap(a, summ[f].to_dict())})
        if not free:
            cum = a["cumulative"][-1] if a["cumulative"] else {}
            gaps.append({"model with LN": labels[s], "k": len(cum.get("neurons", [])), "entropy": cum.get("entropy"),
                         "ce": cum.get("ce"), "baseline_entropy": a["baseline"]["entropy"],
                         "baseline_ce": a["baseline"]["ce"]})
    if gaps:
        st.dataframe(pd.DataFrame(gaps), hide_index=True, width="stretch")
        st.caption("The top-k neurons by CN score mean-ablated together (neuron_ablation); entropy_gap and ce_gap are "
                   "the LN-free model's unablated value minus the ablated model's. The paper: GPT-2 Small vanilla "
                   "with its top-3 ablated matches the LN-free entropy (about 2.785) but not its CE (about 0.06 "
                   "apart).")
    else:
        st.info("Add a model with LN to the set to ablate its confidence neurons.", icon=":material/info:")
c1, c2, _ = st.columns([1, 1, 3])
c1.download_button("Summary (CSV)", table.to_csv(index=False), file_name="overconfidence.csv", mime="text/csv",
                   icon=":material/download:", key="oc_dl_csv")
c2.download_button("All (JSON)", json.dumps({"models": [r.to_json(bins) for r in all_results.values()],
                                            "ablation": gaps}),
                   file_name="overconfidence.json", mime="application/json", icon=":material/download:",
                   key="oc_dl_json")
