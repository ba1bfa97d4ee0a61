"""Train: launch LN-removal / vanilla runs (or a pair) through jobs/, and watch them live."""

from __future__ import annotations

import time
from pathlib import Path

import streamlit as st

import jobs
from lnfree_core.config import ConfigError
from lnfree_core.method.presets import HUB_IDS, preset, preset_names
from lnfree_core.method.schedule import Schedule, ScheduleError
from pages._common.background import background_future, clear_background, run_in_background
from pages._common.charts import metric_chart, show_chart, sigma_chart
from pages._common.env import gpu_count, model_context, model_layers
from pages._common.pickers import dataset_picker, model_picker, run_picker
from pages._common.state import (
    PERSIST, for_page, page_link, page_setup, run_action, runs_root, seed, show_error,
)
from pages._common.ui_data.background import tail_lines
from pages._common.ui_data.families import data_fit_problem
from pages._common.ui_data.metrics import (
    MetricsCache,
    downsample,
    metric_long,
    notable_events,
    removal_frame,
    sigma_frame,
    step_frame,
)
from pages._common.ui_data.runs import (
    MODE_CHOICES,
    device_choices,
    eta_seconds,
    launch_plan,
    parse_keep_steps,
    partner_run,
    progress_text,
)
from pages._common.ui_data.schedule_view import schedule_from_text, schedule_summary
from pages._common.ui_data.throughput_view import throughput_caption, throughput_info

page_setup()

REFRESH_S = 2.0
SCHED_SOURCES = {"preset": "a preset", "auto": "auto (fit to the model)", "designed": "the one designed on the "
                 "Schedule page", "file": "a schedule file"}
OVERRIDES = {"max_steps": "max steps", "micro_batch_size": "batch size (micro)", "grad_accum_steps": "grad accum",
             "seq_len": "sequence length"}
CHARTS = [("loss", "main loss"), ("aux_loss", "aux loss"), ("lr", "learning rate"), ("grad_norm", "gradient norm"),
          ("tokens_per_s", "tokens / s")]
LOG_METRICS = {"loss", "aux_loss", "grad_norm"}


# ---------------------------------------------------------------------------------------- launch form
def schedule_choice(model: str | None) -> str | dict | None:
    """The schedule to train with: a preset name, 'auto', or a schedule dict (designed or from a file)."""
    seed("train.sched_src", "preset")
    src = st.radio("Schedule", list(SCHED_SOURCES), key="train.sched_src", **PERSIST, format_func=SCHED_SOURCES.get,
                   horizontal=True)
    if src == "preset":
        guess = next((n for n, h in HUB_IDS.items() if model in (n, h)), "gpt2")
        seed("train.preset", guess)
        return st.selectbox("Preset", preset_names(), key="train.preset", **PERSIST)
    if src == "auto":
        st.caption("Fits the paper's proportions to the model's layer count and the max steps below (300 if empty).")
        return "auto"
    if src == "designed":
        d = st.session_state.get("designed_schedule")
        bad = st.session_state.get("designed_schedule_error")
        if not d and bad:
            st.error(f"The schedule on the Schedule page cannot run: {bad}")
            page_link("pages/schedule.py", label="Fix it", icon=":material/timeline:")
            return None
        if not d:
            st.info("No schedule designed yet.")
            page_link("pages/schedule.py", label="Design one", icon=":material/timeline:")
            return None
        st.caption(schedule_summary(Schedule.from_dict(d)))
        return d
    up = st.file_uploader("Schedule file", type=["yaml", "yml", "json"], key="train_sched_upload")
    if up is None:
        return None
    try:
        s = schedule_from_text(up.getvalue(), up.name).validate()
    except ScheduleError as e:
        show_error(e, f"{up.name}: ")
        return None
    st.caption(schedule_summary(s))
    return s.to_dict()


def adapt_to_model(model: str | None) -> str | None:
    """When the chosen model changes, set the form to what fits it (before its widgets are drawn): the
    preset for its layer count (else `auto`), and for a model with fewer positions than the preset's
    sequence length, that length cut to the model's context with one micro-batch per step. Returns a
    caption saying what was adapted (None when nothing was)."""
    ss = st.session_state
    if not model or ss.get("_train.adapted_for") == model:
        return ss.get("_train.adapted_note") if model else None
    ss["_train.adapted_for"] = model
    notes = []
    n_layers, context = model_layers(model), model_context(model)
    fitting = next((n for n in preset_names() if n_layers is not None and preset(n).n_layers == n_layers), None)
    if ss.get("train.sched_src", "preset") == "preset" and n_layers is not None:
        if fitting:
            ss["train.preset"] = fitting
        else:
            ss["train.sched_src"] = "auto"
            notes.append(f"schedule `auto` (no preset has {n_layers} layers)")
    hp = preset(fitting or "gpt2").hparams
    if context is not None and context < hp.seq_len:
        ss["train.ov.seq_len"] = context
        ss["train.ov.grad_accum_steps"] = 1
        notes.append(f"sequence length {context} (the model's context; the preset's is {hp.seq_len}) and "
                     f"grad accum 1 (batch {hp.micro_batch_size} x {context} tokens per step)")
    elif context is not None:
        for k in ("seq_len", "grad_accum_steps"):
            ss.pop(f"train.ov.{k}", None)
    note = ("Adapted to the model: " + "; ".join(notes) + ". Change them below if you like.") if notes else None
    ss["_train.adapted_note"] = note
    return note


def seq_len_mismatch(model: str | None, seq_len: int | None) -> str | None:
    context = model_context(model)
    if context is not None and seq_len is not None and seq_len > context:
        return (f"Sequence length {seq_len} is longer than the model's context ({context} positions): set it to "
                f"{context} or less.")
    return None


def layer_mismatch(model: str | None, schedule: str | dict | None, mode: str) -> str | None:
    if not model or schedule in (None, "auto") or mode == "vanilla":
        return None
    n_model = model_layers(model)
    try:
        n_sched = Schedule.from_dict(schedule).n_layers if isinstance(schedule, dict) else preset(schedule).n_layers
    except ScheduleError:
        return None
    if n_model is not None and n_model != n_sched:
        return (f"The schedule is for {n_sched} layers but the model has {n_model}: choose the preset for that "
                "size, \"auto (fit to the model)\", or a schedule designed for it.")
    return None


def launch_form(root: Path) -> None:
    seed("train.name", time.strftime("run-%Y%m%d-%H%M%S"))
    st.text_input("Run name", key="train.name", **PERSIST, help="Letters, digits, '-', '_' and '.'; a pair adds -lnfree / -vanilla.")
    c1, c2 = st.columns(2)
    with c1:
        model = model_picker("train.model", root=root)
    with c2:
        dataset = dataset_picker("train.data")
    adapted = adapt_to_model(model)
    schedule = schedule_choice(model)
    c1, c2 = st.columns(2)
    seed("train.mode", "ln-free")
    mode = c1.radio("Mode", list(MODE_CHOICES), key="train.mode", **PERSIST, format_func=MODE_CHOICES.get, horizontal=True,
                    help="A pair launches <name>-lnfree and <name>-vanilla with the same data order and schedule.")
    devices = device_choices(gpu_count())
    labels = [d.label for d in devices]
    if st.session_state.get("train.device") not in labels:
        st.session_state["train.device"] = labels[1] if len(labels) > 1 else labels[0]
    label = c2.selectbox("Device", labels, key="train.device", **PERSIST)
    device = devices[labels.index(label)]
    st.markdown("**Overrides** (empty: the schedule's value)")
    cols = st.columns(len(OVERRIDES) + 1)
    overrides = {k: cols[i].number_input(lbl, min_value=1, value=None, step=1, key=f"train.ov.{k}", **PERSIST)
                 for i, (k, lbl) in enumerate(OVERRIDES.items())}
    seed("train.save_every", 50)
    save_every = cols[-1].number_input("checkpoint every", min_value=1, step=10, key="train.save_every", **PERSIST)
    st.text_input("Keep the checkpoints of steps", key="train.keep_steps", **PERSIST, placeholder="the schedule's",
                  help="Comma-separated steps (e.g. 300,600): checkpointed and never rotated away. Empty: the "
                       "schedule's keep_steps (presets: the step of the released model).")
    if adapted:
        st.caption(adapted)
    mismatch = (layer_mismatch(model, schedule, mode) or seq_len_mismatch(model, overrides.get("seq_len"))
                or data_fit_problem(model, dataset))
    if mismatch:
        st.error(for_page(mismatch))
    st.button("Launch", type="primary", icon=":material/rocket_launch:", key="train_launch",
              disabled=bool(mismatch) or model is None or dataset is None or schedule is None,
              on_click=launch, args=(root, model, dataset, schedule, mode, device, overrides, int(save_every)))
    result = st.session_state.pop("_train.launched", None)
    if result and result.get("error"):
        show_error(RuntimeError(result["error"]), "Not launched: ")
    elif result:
        st.success(f"Launched {', '.join(result['started'])}.", icon=":material/rocket_launch:")


def launch(root: Path, model: str, dataset: str, schedule: str | dict, mode: str, device, overrides: dict,
           save_every: int) -> None:
    """The Launch button's callback (runs before the widgets are drawn, so it may set their values)."""
    ss = st.session_state
    name = str(ss.get("train.name") or "").strip()
    try:
        jobs.validate_name(name)
        overrides = {k: int(v) if v is not None else None for k, v in overrides.items()}
        overrides["keep_steps"] = parse_keep_steps(ss.get("train.keep_steps"))
        plan = launch_plan(root, name, model=model, dataset=dataset, schedule=schedule, mode=mode,
                           device=device.device, distributed=device.distributed, overrides=overrides,
                           save_every=save_every)
        for run_name, _ in plan:
            if (root / run_name).exists():
                raise jobs.RunExistsError(f"run {run_name!r} already exists under {root}; choose another name")
        started = []
        for run_name, cfg in plan:
            jobs.start_run(root, run_name, cfg, nproc=device.nproc)
            started.append(run_name)
    except (jobs.JobError, ConfigError, ScheduleError, ValueError, OSError) as e:
        ss["_train.launched"] = {"error": str(e)}
        return
    ss["_train.launched"] = {"started": started}
    ss["train.watch"] = started[0]
    ss["train.name"] = time.strftime("run-%Y%m%d-%H%M%S")


# ---------------------------------------------------------------------------------------- live view
def metrics_cache(run_dir: Path) -> MetricsCache:
    caches = st.session_state.setdefault("_train.metrics", {})
    key = str(run_dir)
    if key not in caches:
        caches[key] = MetricsCache(key)
    return caches[key]


def has_checkpoint(run_dir) -> bool:
    return any(Path(run_dir, "checkpoints").glob("step_*"))


def run_controls(status) -> None:
    """Cancel / resume buttons for one run (cancelling runs in a worker thread: it can take a while)."""
    key = f"cancel.{status.name}"
    fut = background_future(key)
    if fut is not None and not fut.done():
        if status.alive:  # once the run says it was cancelled, "Cancelling..." is no longer true
            st.info(f"Cancelling {status.name}...", icon=":material/hourglass_top:")
        return
    if fut is not None and fut.done():
        clear_background(key)
        if fut.exception() is not None:
            show_error(fut.exception(), f"Cancelling {status.name} failed: ")
    if status.alive:
        if st.button(f"Cancel {status.name}", icon=":material/stop_circle:", key=f"train_cancel_{status.name}"):
            run_in_background(key, jobs.cancel_run, status.run_dir)
            st.rerun()
    elif status.state == "failed" and not status.step and not has_checkpoint(status.run_dir):
        # Failed while setting up (bad model, data or schedule): a resume would fail the same way.
        st.caption(f"{status.name} failed while setting up, before its first step: there is nothing to resume. "
                   "Fix the cause shown above and launch a new run.")
    elif status.state in ("failed", "cancelled"):
        if st.button(f"Resume {status.name}", icon=":material/play_circle:", key=f"train_resume_{status.name}"):
            if run_action(jobs.resume_run, status.run_dir):
                st.rerun()


def live_view(root: Path, names: list[str], log: bool, was_active: bool, states: dict[str, str]) -> None:
    statuses = {n: jobs.run_status(root / n) for n in names}
    if (was_active and not any(s.active for s in statuses.values())) or \
            any(s.state != states.get(n) for n, s in statuses.items()):
        st.rerun()  # a state changed (or everything stopped): redraw the page (run picker, controls, timer)
    rows = {n: metrics_cache(root / n).update() for n in names}
    steps = {n: step_frame(r) for n, r in rows.items()}
    removals = next((f for f in (removal_frame(r) for r in rows.values()) if not f.empty), None)

    for n, s in statuses.items():
        eta = eta_seconds(steps[n], s.step, s.max_steps)
        frac, text = progress_text(s.step, s.max_steps, eta, s.state)
        st.progress(frac, text=f"**{n}**: {text}")
        if s.state == "failed":
            st.error(f"{n} failed: {s.reason}")
        elif s.state == "cancelled":
            st.warning(f"{n} was cancelled: {s.reason or ''}")
        elif s.state == "finished" and s.reason:
            st.info(f"{n}: {s.reason}")
    cols = st.columns(max(1, len(names)))
    for col, n in zip(cols, names):
        with col:
            run_controls(statuses[n])

    main = names[0]
    last = steps[main].iloc[-1] if not steps[main].empty else None
    c = st.columns(4)
    c[0].metric("main loss", f"{last['loss']:.4f}" if last is not None else "-")
    c[1].metric("aux loss", f"{last['aux_loss']:.3g}" if last is not None and last["aux_loss"] == last["aux_loss"] else "-")
    c[2].metric("tokens / s", f"{last['tokens_per_s']:,.0f}" if last is not None else "-")
    c[3].metric("LN blocks removed", 0 if removals is None else len(removals))
    st.caption("Throughput: " + throughput_caption(throughput_info(rows[main], steps[main], statuses[main].step,
                                                                  statuses[main].max_steps)))

    st.caption("Vertical lines: LN removal events (blue LN_MLP, orange LN_qk, green LN_v, red LN_f); hover for details.")
    long = metric_long(steps)
    if long.empty and statuses[main].active:
        st.info("No optimizer step logged yet (the job is starting: loading the model and data).")
    elif long.empty:
        st.info(f"{main} logged no optimizer step (it {statuses[main].state} before its first step).")
    else:
        grid = st.columns(2)
        for i, (metric, title) in enumerate(CHARTS):
            part = downsample(long[long["metric"] == metric], by=["run"])
            if part.empty:
                continue
            with grid[i % 2]:
                show_chart(metric_chart(part, title=title, log=log and metric in LOG_METRICS,
                                                      events=removals))
        sig = next((f for f in (sigma_frame(r) for r in rows.values()) if not f.empty), None)
        if sig is not None:
            with grid[len(CHARTS) % 2]:
                show_chart(sigma_chart(downsample(sig, y="sigma", by=["block"], max_points=4000),
                                                     log=log, events=removals))
    for n in names:
        notes = notable_events(rows[n])
        if not notes.empty:
            with st.expander(f"Events of {n} ({len(notes)})"):
                st.dataframe(notes, hide_index=True, width="stretch")
    for n in names:
        with st.expander(f"Log of {n} (train.log, last lines)"):
            st.code(tail_lines(root / n / "train.log", 40) or "(empty)", language=None)


# ---------------------------------------------------------------------------------------- page
st.title("Train")
root = runs_root()
q_run = st.query_params.get("run")
if q_run and (root / q_run).is_dir() and st.session_state.get("_train.q_run") != q_run:
    st.session_state["train.watch"] = q_run
    st.session_state["_train.q_run"] = q_run

# Decided once per session: an `expanded` that changed between reruns made the form collapse on its
# first click (the run picker below sets train.watch on the first run).
seed("_train.form_open", not jobs.list_runs(root) or "train.watch" not in st.session_state)
with st.expander("Launch a run", expanded=bool(st.session_state["_train.form_open"])):
    launch_form(root)

st.header("Live view")
c1, c2, c3 = st.columns([3, 2, 1])
with c1:
    name = run_picker("train.watch", label="Run", root=root)
names = [name] if name else []
partner = partner_run(name) if name else None
if partner and (root / partner).is_dir():
    seed("train.overlay", True)
    if c2.checkbox(f"show the paired run {partner} on the same axes", key="train.overlay", **PERSIST):
        names.append(partner)
log = c3.toggle("log scale", key="train.log", **PERSIST)
if names:
    shown = {n: jobs.run_status(root / n) for n in names}
    active = any(s.active for s in shown.values())
    st.fragment(live_view, run_every=REFRESH_S if active else None)(root, names, log, active,
                                                                   {n: s.state for n, s in shown.items()})
else:
    st.info("Launch a run above; it will show here.")
