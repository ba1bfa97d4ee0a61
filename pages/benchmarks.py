"""Benchmarks: BoolQ, HellaSwag, PIQA and WinoGrande accuracy of the model set through EleutherAI's
lm-evaluation-harness (appendix F), normalised accuracy where the task has one, with standard errors;
task data from the Hub or from local json/jsonl files, or tasks of one's own (lm-eval task YAMLs)."""

from __future__ import annotations

import json

import altair as alt
import pandas as pd
import streamlit as st

from lnfree_core.analysis.benchmarks import MISSING_MESSAGE, PAPER_TASKS, lm_eval_available
from lnfree_core.analysis.cached_experiments import BenchTask, benchmark_eval
from lnfree_core.cli.bench import parse_tasks
from lnfree_core.cli.eval import UsageError
from pages._common.analysis_inputs import analysis_settings, model_labels, model_set_picker, shared_widget
from pages._common.analysis_jobs import run_jobs
from pages._common.charts import fit_chart, model_color
from pages._common.env import hub_reachable
from pages._common.state import page_setup, seed

page_setup()

st.title("Benchmarks")
st.caption("Zero-shot accuracy on the paper's benchmarks through lm-eval, run on the models lnfree loads (appendix "
           "F: LN-free models stay within 1-2 points of their baselines). HellaSwag and PIQA report length-"
           "normalised accuracy (acc_norm), BoolQ and WinoGrande accuracy.")
if not lm_eval_available():
    st.error(MISSING_MESSAGE, icon=":material/error:")
    st.stop()
with st.container(border=True):
    specs = model_set_picker()
    seed("bench.tasks", list(PAPER_TASKS))
    tasks = shared_widget("bench.tasks", st.multiselect, "Tasks", list(PAPER_TASKS), accept_new_options=True,
                                 help="lm-eval task names; type another built-in name to add it.")
    c1, c2 = st.columns(2)
    seed("bench.data", "")
    data_text = shared_widget(
        "bench.data", c1.text_area, "Local task data (one TASK=FILE per line)", height=90,
        help="Read a task's evaluation split from a local json/jsonl file in the task's own format instead of the "
             "Hugging Face Hub, e.g. piqa=/data/piqa_valid.jsonl.")
    seed("bench.yaml", "")
    yaml_text = shared_widget("bench.yaml", c2.text_area, "Task YAML files of one's own (one per line)",
                                     height=90, help="lm-eval task configs, e.g. dataset_path: json with "
                                                     "dataset_kwargs.data_files pointing at a local file.")
    c1, c2 = st.columns(2)
    seed("bench.limit", 0)
    limit = int(shared_widget("bench.limit", c1.number_input, "Documents per task (0: all)", min_value=0,
                                     step=100))
    settings = analysis_settings()
if not specs:
    st.info("Choose at least one model above.", icon=":material/info:")
    st.stop()

try:
    parsed, _ = parse_tasks(tasks or None, [x.strip() for x in data_text.splitlines() if x.strip()],
                            [x.strip() for x in yaml_text.splitlines() if x.strip()])
except UsageError as e:
    st.error(str(e), icon=":material/error:")
    st.stop()
hub_only = [] if hub_reachable() else [t for t, f, y in parsed if f is None and y is None]
if hub_only:
    st.caption(f":orange[{', '.join(hub_only)} load their data from the Hugging Face Hub, which is not reachable "
               "now: only results already in the cache are shown; give local data files above.]")
labels = model_labels(specs)
opts = {"cache_dir": settings["cache_dir"], "device": settings["device"], "batch_size": settings["batch_size"]}
jobs = []
for s in specs:
    for t, f, y in parsed:
        bt = BenchTask(t, data_file=f, task_yaml=y, limit=limit or None)
        jobs.append(((s, t), f"{labels[s]} on {t}",
                     lambda progress, s=s, bt=bt: benchmark_eval(s, bt, progress=progress,
                                                                 cache_only=bt.task in hub_only, **opts)))
results = {k: r for k, r in run_jobs(jobs).items() if r is not None}
if not results:
    st.info("No benchmark results to show yet.", icon=":material/info:")
    st.stop()
rows = [{"model": labels[s], "task": t, **{k: v for k, v in r.to_json().items() if k not in ("model", "label", "task")}}
        for (s, t), r in results.items()]
df = pd.DataFrame(rows)
order = [labels[s] for s in specs]
table = df.pivot_table(index=["task", "metric"], columns="model", values="value", sort=False).reindex(
    columns=[o for o in order if o in set(df["model"])])
shown = table.copy()
err = df.pivot_table(index=["task", "metric"], columns="model", values="stderr", sort=False)
for col in shown.columns:
    shown[col] = [f"{100 * v:.1f} ± {100 * (err.loc[idx, col] or 0):.1f}" if pd.notna(v) else "-"
                  for idx, v in table[col].items()]
st.header("Accuracy (%)")
st.dataframe(shown.reset_index(), hide_index=True, width="stretch")
st.caption("Value ± standard error (lm-eval's, over documents), in percent; the paper's Tables 6-9.")
df["lo"], df["hi"] = df["value"] - df["stderr"].fillna(0), df["value"] + df["stderr"].fillna(0)
bars = alt.Chart(df).mark_bar().encode(
    x=alt.X("task:N", title=None), xOffset=alt.XOffset("model:N", sort=order),
    y=alt.Y("value:Q", title="accuracy", axis=alt.Axis(format="%")), color=model_color(order),
    tooltip=["model", "task", "metric", alt.Tooltip("value:Q", format=".2%"), alt.Tooltip("stderr:Q", format=".2%"),
             "n"])
rules = alt.Chart(df).mark_rule().encode(x="task:N", xOffset=alt.XOffset("model:N", sort=order), y="lo:Q", y2="hi:Q")
st.altair_chart(fit_chart(alt.layer(bars, rules).properties(title="accuracy per task (± standard error)"), 260),
                width="stretch")
c1, c2, _ = st.columns([1, 1, 3])
c1.download_button("Results (CSV)", df.to_csv(index=False), file_name="benchmarks.csv", mime="text/csv",
                   icon=":material/download:", key="bench_dl_csv")
c2.download_button("Results (JSON)", json.dumps(rows), file_name="benchmarks.json", mime="application/json",
                   icon=":material/download:", key="bench_dl_json")
