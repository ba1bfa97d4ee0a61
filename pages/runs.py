"""Runs: every run under the runs root with its status, progress and final loss; watch, compare,
cancel, resume or delete them."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

import jobs
from pages._common.pickers import run_picker
from pages._common.state import (
    ANALYSIS_SECTION, PERSIST, page_link, page_setup, registered_pages, runs_root, run_action, show_error,
)
from pages._common.ui_data.runs import run_request, runs_frame

page_setup()

STATES = ["queued", "starting", "running", "finished", "failed", "cancelled"]


def table(root: Path) -> None:
    statuses = jobs.list_runs(root)
    df = runs_frame(statuses)
    states = st.session_state.get("runs.states") or []
    if states:
        df = df[df["state"].isin(states)]
    st.dataframe(
        df, hide_index=True, width="stretch",
        column_config={
            "progress": st.column_config.ProgressColumn("progress", min_value=0.0, max_value=1.0, format="percent"),
            "loss": st.column_config.NumberColumn("final loss", format="%.4f", help="main loss of the last step"),
            "started": st.column_config.DatetimeColumn("started", format="YYYY-MM-DD HH:mm"),
            "max_steps": st.column_config.NumberColumn("max steps"),
        },
    )
    if any(s.active for s in statuses):
        st.caption("Refreshing every 3 s while runs are active.")


def actions(root: Path, names: list[str]) -> None:
    for name in names:
        try:
            s = jobs.run_status(root / name)
        except jobs.JobError as e:
            show_error(e)
            continue
        with st.container(border=True):
            c1, c2, c3, c4 = st.columns([3, 1, 1, 2])
            c1.markdown(f"**{name}**: {s.state}, step {s.step} of {s.max_steps or '?'}")
            if s.reason:
                c1.caption(s.reason)
            with c2:
                page_link("pages/train.py", label="Watch", icon=":material/monitoring:",
                                 query_params={"run": name})
            if s.alive:
                if c3.button("Cancel", key=f"runs_cancel_{name}", icon=":material/stop_circle:"):
                    with st.spinner(f"Cancelling {name} (it checkpoints first)..."):
                        run_action(jobs.cancel_run, s.run_dir)
                    st.rerun()
            elif s.state in ("failed", "cancelled"):
                if c3.button("Resume", key=f"runs_resume_{name}", icon=":material/play_circle:"):
                    if run_action(jobs.resume_run, s.run_dir):
                        st.rerun()
            if not s.alive:
                with c4.popover("Delete", icon=":material/delete:"):
                    st.write(f"Delete `{s.run_dir}` with its checkpoints and metrics? This cannot be undone.")
                    if st.button(f"Delete {name}", key=f"runs_delete_{name}", type="primary"):
                        if run_action(jobs.delete_run, s.run_dir):
                            st.rerun()  # the run picker drops the deleted name
            with st.expander("configuration"):
                st.json(run_request(s.run_dir), expanded=1)


st.title("Runs")
root = runs_root()
runs = jobs.list_runs(root)
if not runs:
    st.info(f"No runs under `{root}` yet.")
    page_link("pages/train.py", label="Launch one on the Train page", icon=":material/model_training:")
    st.stop()

st.multiselect("Show states", STATES, key="runs.states", **PERSIST, placeholder="all states")
active = any(s.active for s in runs)
st.fragment(table, run_every=3.0 if active else None)(root)

st.subheader("Selected runs")
names = run_picker("runs.selected", label="Runs to watch, compare or manage", multi=True, root=root)
st.session_state["selected_runs"] = list(names)
if names:
    analysis = registered_pages(ANALYSIS_SECTION)
    if analysis:
        cols = st.columns(len(analysis))
        for col, (path, title) in zip(cols, analysis.items()):
            with col:
                page_link(path, label=f"{title} ({len(names)})", icon=":material/arrow_forward:",
                                 query_params={"runs": list(names)})
    else:
        st.caption("Analysis pages (Compare, ...) are not installed yet.")
    actions(root, list(names))
