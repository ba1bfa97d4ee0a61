"""IOI patching: activation patching vs attribution patching of the residual stream before every block
at every position of aligned IOI prompts (section 5.2, Fig. 2), the error per site and the per-layer
improvement score of an LN-free model over its vanilla counterpart. Numbers from lnfree_core.analysis."""

from __future__ import annotations

import json

import altair as alt
import pandas as pd
import streamlit as st

from lnfree_core.analysis.cached_experiments import ioi_eval
from lnfree_core.analysis.patching import improvement_score
from pages._common.analysis_inputs import analysis_settings, model_labels, model_set_picker, shared_widget
from pages._common.analysis_jobs import run_jobs
from pages._common.charts import fit_chart
from pages._common.state import page_setup, seed

page_setup()

METHODS = {"act": "activation patching", "attr": "attribution patching", "err": "error (attribution - activation)"}


def grid_frame(label: str, res) -> pd.DataFrame:
    p = res.patching
    grids = {"act": p.normalised("act"), "attr": p.normalised("attr"), "err": p.error}
    rows = []
    for key, g in grids.items():
        for l in range(g.shape[0]):
            for t in range(g.shape[1]):
                rows.append({"model": label, "method": METHODS[key], "layer": l, "position": res.labels[t],
                             "pos": t, "value": float(g[l, t])})
    return pd.DataFrame(rows)


def heatmap(df: pd.DataFrame, method: str, order: list[str], positions: list[str]) -> alt.FacetChart:
    data = df[df["method"] == method]
    lim = max(1e-9, float(data["value"].abs().max()))
    return alt.Chart(data).mark_rect().encode(
        x=alt.X("position:N", sort=positions, title=None, axis=alt.Axis(labelAngle=-45)),
        y=alt.Y("layer:O", title="layer (resid_pre)"),
        color=alt.Color("value:Q", scale=alt.Scale(scheme="redblue", domain=[-lim, lim], reverse=True),
                        title=None),
        tooltip=[alt.Tooltip("model:N"), alt.Tooltip("layer:O"), alt.Tooltip("position:N"),
                 alt.Tooltip("value:Q", format="+.4f")],
    ).properties(width=max(160, min(320, 900 // max(1, len(order)))), height=220).facet(
        column=alt.Column("model:N", sort=order, title=None)).properties(
        title=f"{method} (normalised logit difference)")


st.title("IOI patching")
st.caption("Clean IOI prompts are patched into corrupted ones (the other name at S2) at the residual stream before "
           "each block, position by position. Activation patching runs every patch; attribution patching estimates "
           "them all from one backward pass (eq. 7). The paper finds the estimate no better without LayerNorm "
           "(section 5.2, Fig. 2).")
with st.container(border=True):
    specs = model_set_picker()
    c1, c2 = st.columns(2)
    seed("ioi.n", 480)
    n = int(shared_widget("ioi.n", c1.number_input, "IOI prompts", min_value=1, max_value=100_000, step=4,
                                 help="The paper: 480 (groups of four name orderings)."))
    seed("ioi.seed", 0)
    ioi_seed = int(shared_widget("ioi.seed", c2.number_input, "Seed", min_value=0, max_value=2**31 - 1,
                                    help="Draws names, places, objects and templates."))
    settings = analysis_settings()
if not specs:
    st.info("Choose at least one model above.", icon=":material/info:")
    st.stop()
labels = model_labels(specs)
opts = {"cache_dir": settings["cache_dir"], "device": settings["device"], "batch_size": settings["batch_size"]}
results = run_jobs([(s, f"{labels[s]}: IOI patching",
                            lambda progress, s=s: ioi_eval(s, n=n, seed=ioi_seed, progress=progress, **opts))
                           for s in specs])
if not results:
    st.stop()
order = [labels[s] for s in specs if s in results]
first = next(iter(results.values()))
st.caption(f"Example prompt: “{first.entry.meta['example']}” ({first.entry.meta['seq_len']} tokens, names at the "
           "same positions in every prompt).")

frames = pd.concat([grid_frame(labels[s], r) for s, r in results.items()], ignore_index=True)
for method in METHODS.values():
    st.altair_chart(heatmap(frames, method, order, first.labels), width="content")

st.header("Error per layer and improvement score")
summary = pd.DataFrame([{"model": labels[s], "ln_free": r.ln_free, "prompts": r.patching.act.shape[0],
                         "LD clean": float(r.patching.ld_clean.mean()),
                         "LD corrupted": float(r.patching.ld_corrupt.mean()),
                         **{f"layer {l}": float(e) for l, e in enumerate(r.patching.layer_abs_error())},
                         "seconds (activation)": r.entry.meta["seconds"]["activation"],
                         "seconds (attribution)": r.entry.meta["seconds"]["attribution"]}
                        for s, r in results.items()])
st.dataframe(summary, hide_index=True, width="stretch")
st.caption("Per layer: the sum over positions of |attribution - activation| (normalised units).")
with_ln = [s for s in results if not results[s].ln_free]
free = [s for s in results if results[s].ln_free]
if with_ln and free:
    c1, c2 = st.columns(2)
    default_v = next((s for s in with_ln if "vanilla" in labels[s].lower()), with_ln[-1])
    vanilla = c1.selectbox("Vanilla model (with LN)", with_ln, index=with_ln.index(default_v),
                           format_func=labels.get, key="ioi.vanilla")
    ln_free = c2.selectbox("LN-free model", free, format_func=labels.get, key="ioi.ln_free")
    imp = improvement_score(results[vanilla].patching, results[ln_free].patching)
    m1, m2 = st.columns(2)
    m1.metric("improvement score, mean over layers", f"{imp['mean']:+.4f}")
    m2.metric("standard deviation over layers", f"{imp['std']:.4f}")
    st.caption("Per layer: sum_t |error| of the vanilla model minus the same of the LN-free model; positive means "
               "attribution patching is more accurate without LN. The paper, GPT-2 Small: mean -0.026, std 0.082.")
    imp_df = pd.DataFrame({"layer": range(len(imp["per_layer"])), "improvement": imp["per_layer"]})
    st.altair_chart(fit_chart(alt.Chart(imp_df).mark_bar().encode(
        x=alt.X("layer:O"), y=alt.Y("improvement:Q"),
        tooltip=[alt.Tooltip("layer:O"), alt.Tooltip("improvement:Q", format="+.4f")]).properties(
        title="per-layer improvement score (vanilla minus LN-free)"), 200), width="stretch")
else:
    imp = None
    st.info("Add a model with LN and an LN-free model to the set for the improvement score.", icon=":material/info:")
c1, c2, _ = st.columns([1, 1, 3])
c1.download_button("Sites (CSV)", frames.to_csv(index=False), file_name="ioi_patching.csv", mime="text/csv",
                   icon=":material/download:", key="ioi_dl_csv")
c2.download_button("All (JSON)", json.dumps({"models": [r.to_json() for r in results.values()], "improvement": imp}),
                   file_name="ioi_patching.json", mime="application/json", icon=":material/download:",
                   key="ioi_dl_json")
