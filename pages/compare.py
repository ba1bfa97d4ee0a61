"""Compare: the cross-entropy of several models on several datasets in the form of the paper's Table 1
(lowest per group in bold, LN-free gaps in brackets), medians and percentile ranges (2.5-97.5, 1-99,
0.1-99.9: the paper's "95th" and "99.9th perc" are the first and last), the OWT split note, and the
per-token loss distributions; CSV and Markdown downloads. Numbers come from lnfree_core.analysis."""

from __future__ import annotations

import hashlib

import altair as alt
import numpy as np
import pandas as pd
import streamlit as st

from lnfree_core.analysis.cached import ce_eval
from lnfree_core.data.owt_reference import OWT_SPLIT_NOTE
from pages._common.analysis_inputs import missing_inputs_hint, model_labels, models_and_data
from pages._common.analysis_jobs import dataset_labels, model_dataset_jobs, run_jobs, run_options
from pages._common.charts import fit_chart, model_color
from pages._common.env import model_layers
from pages._common.state import PERSIST, page_link, page_setup, seed
from pages._common.ui_data.analysis_frames import (
    RANGE_STATS,
    SUMMARY_STATS,
    CERow,
    ce_summary_frame,
    frame_markdown,
    loss_histogram,
    range_frame,
    stat_table,
)

page_setup()


def histogram(entries: tuple[tuple[str, str, float], ...], bins: int) -> pd.DataFrame:
    """loss_histogram of cached CE results, given as (label, cache entry folder, created time); read from
    the analysis disk cache (memory-mapped) on each run, with no second cache on top of it."""
    return loss_histogram({label: np.load(f"{path}/losses.npy", mmap_mode="r") for label, path, _ in entries}, bins)


def meta_editor(specs: list[str], labels: dict[str, str]) -> tuple[dict[str, str], dict[str, str | None]]:
    """Table 1 row labels and groups (the lowest value is marked per group), editable."""
    layers = {s: model_layers(s) for s in specs}
    known = all(layers.values())  # group by size only when every size is known, else one group
    default_groups = {s: f"{n} layers" if known else "" for s, n in layers.items()}
    df = pd.DataFrame({"model": specs, "label": [labels[s] for s in specs],
                       "group": [default_groups[s] for s in specs]})
    key = "compare.meta." + hashlib.sha1("\n".join(specs).encode()).hexdigest()[:12]
    with st.expander("Row labels and groups", icon=":material/edit:"):
        st.caption("The lowest value is marked per group and dataset (the paper groups by model size); "
                   "LN-free rows show their gap to it.")
        edited = st.data_editor(df, key=key, hide_index=True, disabled=["model"], width="stretch",
                                column_config={"model": st.column_config.TextColumn("model spec")})
    out_labels: dict[str, str] = {}
    out_groups: dict[str, str | None] = {}
    for spec, label, group in zip(specs, edited["label"], edited["group"]):
        label = str(label).strip() if isinstance(label, str) and label.strip() else labels[spec]
        while label in out_labels.values():
            label += "'"
        out_labels[spec] = label
        out_groups[spec] = str(group).strip() if isinstance(group, str) and group.strip() else None
    return out_labels, out_groups


def distribution_chart(hist: pd.DataFrame, dataset: str, log_y: bool, order: list[str]) -> alt.Chart:
    data = hist[hist["count"] > 0] if log_y else hist
    chart = (
        alt.Chart(data)
        .mark_line(interpolate="step-after", strokeWidth=1.6)
        .encode(
            x=alt.X("lo:Q", title="per-token cross-entropy (nats, log scale)", scale=alt.Scale(type="log")),
            y=alt.Y("share:Q", title="share of tokens", scale=alt.Scale(type="log" if log_y else "linear")),
            color=model_color(order),
            tooltip=[alt.Tooltip("model:N"), alt.Tooltip("lo:Q", format=".3g", title="from"),
                     alt.Tooltip("hi:Q", format=".3g", title="to"), alt.Tooltip("count:Q"),
                     alt.Tooltip("share:Q", format=".3%")],
        )
        .properties(title=f"per-token loss distribution on {dataset}")
    )
    return fit_chart(chart, 280)


st.title("Compare")
st.caption("Mean per-token cross-entropy of each model on each dataset, as in the paper's Table 1, with the "
           "median and central percentile ranges, and the full distribution of per-token losses.")
specs, datasets, n, seq_len, split, settings = models_and_data(multi_data=True)
if not specs or not datasets:
    missing_inputs_hint(specs, datasets)
    st.stop()

labels = model_labels(specs)
labels, groups = meta_editor(specs, labels)
ds_labels = dataset_labels(datasets)
kwargs = run_options(settings)
results = run_jobs(model_dataset_jobs(specs, datasets, labels, ds_labels, n, seq_len, split,
                                     lambda spec, data, progress: ce_eval(spec, data, progress=progress, **kwargs)))
if not results:
    st.stop()

rows = [CERow(labels[spec], ds_labels[ds], res.summary, res.ln_free, groups[spec])
        for (spec, ds), res in results.items()]
summary = ce_summary_frame(rows)

st.header("Cross-entropy")
seed("compare.stat", "mean")
stat = st.segmented_control("Statistic", list(SUMMARY_STATS), key="compare.stat", **PERSIST,
                            format_func=SUMMARY_STATS.get, selection_mode="single") or "mean"
if stat in RANGE_STATS:
    table_df = range_frame(rows, stat)
    markdown = frame_markdown(table_df)
    csv = table_df.to_csv(index=False)
    st.markdown(markdown)
    st.caption(f"{SUMMARY_STATS[stat]} of the per-token losses: [lower, upper] percentiles over all scored tokens "
               "(numpy's linear percentiles).")
else:
    table = stat_table(rows, stat)
    markdown, csv = table.to_markdown(), table.to_csv()
    st.markdown(markdown)
    st.caption(f"{SUMMARY_STATS[stat].split(' (')[0].capitalize()} per-token CE over {n} sequences of {seq_len} "
               "tokens. The lowest value per group and dataset is in **bold**; LN-free models show their gap to "
               "it in [brackets].")
st.caption(OWT_SPLIT_NOTE)
c1, c2, c3, _ = st.columns([1, 1, 1, 2])
c1.download_button("Table (Markdown)", markdown, file_name=f"ce_{stat}.md", mime="text/markdown",
                   icon=":material/download:", key="compare_dl_md")
c2.download_button("Table (CSV)", csv, file_name=f"ce_{stat}.csv", mime="text/csv", icon=":material/download:",
                   key="compare_dl_csv")
c3.download_button("All statistics (CSV)", summary.to_csv(index=False), file_name="ce_summary.csv",
                   mime="text/csv", icon=":material/download:", key="compare_dl_summary")

st.subheader("All statistics")
st.dataframe(summary, hide_index=True, width="stretch",
             column_config={c: st.column_config.NumberColumn(c, format="%.4f")
                            for c in summary.columns if c not in ("model", "dataset", "group", "ln_free", "tokens")})

st.header("Per-token loss distributions")
computed = [ds for ds in datasets if any((s, ds) in results for s in specs)]
c1, c2, c3 = st.columns([2, 1, 1])
if st.session_state.get("compare.dist_ds") not in computed:
    st.session_state.pop("compare.dist_ds", None)
shown = c1.selectbox("Dataset", computed, key="compare.dist_ds", format_func=ds_labels.get)
log_y = c2.toggle("Log share", value=True, key="compare.dist_log")
bins = c3.number_input("Bins", min_value=10, max_value=400, value=80, step=10, key="compare.dist_bins")
entries = []
for spec in specs:
    res = results.get((spec, shown))
    if res is not None and res.entry.path is not None:
        entries.append((labels[spec], str(res.entry.path), float(res.entry.meta.get("created", 0))))
if entries:
    st.altair_chart(distribution_chart(histogram(tuple(entries), int(bins)), ds_labels[shown], log_y,
                                       [labels[s] for s in specs]), width="stretch")
    st.caption("Shares of tokens on log-spaced loss bins shared by all models; a heavy right tail is what "
               "raises a mean far above the median (see the Outliers page).")
page_link("pages/outliers.py", label="Inspect the high-loss sequences", icon=":material/scatter_plot:")
