"""Schedule: design an LN-removal schedule (preset, auto fit or file), see its timeline, save it."""

from __future__ import annotations

import streamlit as st

from lnfree_core.method.presets import preset, preset_names
from lnfree_core.method.schedule import GROUPS, HParams, Schedule, ScheduleError, ema_summary, fit_schedule
from pages._common.charts import layered_chart, removal_rules, show_chart
from pages._common.state import PERSIST, page_link, page_setup, seed, show_error
from pages._common.ui_data.schedule_view import (
    GROUP_LABELS,
    events_frame,
    lr_frame,
    schedule_from_text,
    schedule_summary,
    schedule_to_text,
)

page_setup()

E = "sched.e."  # editor widget keys
SOURCES = {"preset": "a preset (paper, Table 3)", "auto": "auto: fit to a model", "file": "a schedule file"}
INT_HP = {"micro_batch_size": "micro batch size", "grad_accum_steps": "grad accumulation steps",
          "seq_len": "sequence length", "warmup_steps": "warmup steps", "max_steps": "max steps"}
FLOAT_HP = {"lr": ("learning rate", "%.2e", 1e-5), "min_lr": ("min learning rate", "%.2e", 1e-5),
            "weight_decay": ("weight decay", "%.4f", 1e-3), "aux_weight": ("aux loss weight (lambda)", "%.4f", 1e-2),
            "grad_clip": ("gradient clip (0: off)", "%.3f", 0.1)}


# Hyperparameters the editor has no widget for: carried over from the schedule it started from.
KEPT_HP = ("sigma_ema_tokens", "mask_eot_labels", "weight_decay_fakeln_gain", "keep_steps")


def load_editor(s: Schedule) -> None:
    """Set every editor widget from schedule `s` (before the widgets are drawn)."""
    ss = st.session_state
    ss[E + "name"] = s.name
    ss[E + "n_layers"] = int(s.n_layers)
    ss[E + "order"] = list(s.order)
    for g in GROUPS:
        ss[E + f"start.{g}"] = int(s.starts.get(g, 1))
        if g != "f":
            ss[E + f"gap.{g}"] = int(s.gaps.get(g, 0))
    hp = s.hparams
    for k in INT_HP:
        ss[E + k] = int(getattr(hp, k))
    for k in FLOAT_HP:
        ss[E + k] = float(getattr(hp, k))
    ss[E + "ema_on"] = hp.sigma_ema is not None
    ss[E + "sigma_ema"] = float(hp.sigma_ema if hp.sigma_ema is not None else 0.9)
    ss[E + "grad_checkpointing"] = bool(hp.grad_checkpointing)
    ss["_sched.base_extra"] = {"adam_betas": list(hp.adam_betas), "base_model": s.base_model,
                               **{k: getattr(hp, k) for k in KEPT_HP}}


def base_schedule() -> Schedule | None:
    """The schedule chosen under 'Start from' (None with an inline error if it cannot be made)."""
    seed("sched.source", "preset")
    source = st.radio("Start from", list(SOURCES), key="sched.source", **PERSIST, format_func=SOURCES.get, horizontal=True)
    if source == "preset":
        seed("sched.preset", "gpt2")
        name = st.selectbox("Preset", preset_names(), key="sched.preset", **PERSIST)
        return preset(name)
    if source == "auto":
        seed("sched.auto_layers", 12)
        seed("sched.auto_steps", 300)
        c1, c2 = st.columns(2)
        n_layers = c1.number_input("Layers", min_value=1, max_value=200, step=1, key="sched.auto_layers", **PERSIST)
        max_steps = c2.number_input("Max steps", min_value=2, step=50, key="sched.auto_steps", **PERSIST)
        try:
            return fit_schedule(int(n_layers), int(max_steps))
        except ScheduleError as e:
            show_error(e)
            return None
    up = st.file_uploader("Schedule file (.yaml, .yml or .json)", type=["yaml", "yml", "json"], key="sched_upload")
    if up is not None:
        try:
            st.session_state["_sched.uploaded"] = schedule_from_text(up.getvalue(), up.name).to_dict()
            st.session_state["_sched.uploaded_name"] = up.name
        except ScheduleError as e:
            show_error(e, f"{up.name}: ")
            return None
    if "_sched.uploaded" not in st.session_state:
        st.info("Upload a schedule file saved from this page or by `python -m lnfree_core schedule fit`.")
        return None
    st.caption(f"from {st.session_state.get('_sched.uploaded_name', 'an uploaded file')}")
    return Schedule.from_dict(st.session_state["_sched.uploaded"])


def editor() -> dict:
    """Widgets for every field of the schedule; returns the schedule as a dict."""
    ss = st.session_state
    c1, c2, c3 = st.columns([2, 1, 3])
    c1.text_input("Name", key=E + "name", **PERSIST)
    c2.number_input("Layers", min_value=1, max_value=200, step=1, key=E + "n_layers", **PERSIST)
    c3.multiselect("Group order (removal order)", list(GROUPS), key=E + "order", **PERSIST, format_func=GROUP_LABELS.get,
                   help="Groups are removed one after another in this order; each must start after the previous ends.")
    st.markdown("**Starts and gaps** (steps; block of layer *l* in a group is removed at start + *l* x gap)")
    cols = st.columns(4)
    for col, g in zip(cols, GROUPS):
        with col:
            st.number_input(f"{GROUP_LABELS[g]} start", min_value=0, step=1, key=E + f"start.{g}", **PERSIST)
            if g != "f":
                st.number_input(f"{GROUP_LABELS[g]} gap", min_value=0, step=1, key=E + f"gap.{g}", **PERSIST,
                                help="0 removes every layer of the group at once")
            else:
                st.caption("a single block")
    with st.expander("Hyperparameters", expanded=True):
        cols = st.columns(5)
        for i, (k, label) in enumerate(INT_HP.items()):
            cols[i % 5].number_input(label, min_value=0, step=1, key=E + k, **PERSIST)
        cols = st.columns(5)
        for i, (k, (label, fmt, step)) in enumerate(FLOAT_HP.items()):
            cols[i % 5].number_input(label, min_value=0.0, format=fmt, step=step, key=E + k, **PERSIST)
        c1, c2, c3 = st.columns(3)
        ema_on = c1.checkbox("EMA for sigma_avg", key=E + "ema_on", **PERSIST,
                             help="Off: sigma_avg is the last step's value. On: an EMA (every preset, as the reference runs; "
                                  "the presets' factor applies per a number of tokens per block kind, shown below).")
        c2.number_input("EMA factor", min_value=0.0, max_value=0.9999, format="%.4f", key=E + "sigma_ema", **PERSIST,
                        disabled=not ema_on)
        c3.checkbox("gradient checkpointing", key=E + "grad_checkpointing", **PERSIST)
    extra = ss.get("_sched.base_extra") or {}
    hp = {k: int(ss[E + k]) for k in INT_HP}
    hp.update({k: float(ss[E + k]) for k in FLOAT_HP})
    hp["sigma_ema"] = float(ss[E + "sigma_ema"]) if ema_on else None
    hp["grad_checkpointing"] = bool(ss[E + "grad_checkpointing"])
    hp["adam_betas"] = extra.get("adam_betas", list(HParams().adam_betas))
    hp.update({k: extra[k] for k in KEPT_HP if k in extra})
    if ema_on:
        st.caption(ema_summary(HParams(**{**hp, "adam_betas": tuple(hp["adam_betas"])})))
    return {
        "name": ss[E + "name"] or "custom",
        "base_model": extra.get("base_model"),
        "n_layers": int(ss[E + "n_layers"]),
        "order": list(ss[E + "order"]),
        "starts": {g: int(ss[E + f"start.{g}"]) for g in GROUPS},
        "gaps": {g: int(ss[E + f"gap.{g}"]) for g in GROUPS if g != "f"},
        "hparams": hp,
    }


def timeline(s: Schedule) -> dict:
    """One vertical rule per removal event, coloured by group, over the LR schedule (a Vega-Lite spec)."""
    events = events_frame(s)
    lr = {
        "data": {"name": "lr"},
        "mark": {"type": "line", "color": "#555", "strokeWidth": 2},
        "encoding": {
            # The axis reaches the last event even when it falls after max_steps (a design that cannot
            # run): its rule is then drawn inside the chart, past the end of the LR line.
            "x": {"field": "step", "type": "quantitative", "title": "optimizer step",
                  "scale": {"domain": [0, max(s.hparams.max_steps, s.last_event_step() + 1)], "nice": False}},
            "y": {"field": "lr", "type": "quantitative", "title": "learning rate", "axis": {"format": ".1e"}},
            "tooltip": [{"field": "step", "type": "quantitative"},
                        {"field": "lr", "type": "quantitative", "format": ".3e"}],
        },
    }
    return layered_chart(
        [removal_rules("events", events), lr],
        {"events": events[["step", "name", "group"]], "lr": lr_frame(s.hparams)},
        title=f"{len(events)} removal events and the learning rate", height=260,
    )


st.title("Schedule")
st.caption("When each LayerNorm block is removed during fine-tuning (paper, appendix B), and the training "
           "hyperparameters. A removal event at step s is applied after s optimizer steps.")

base = base_schedule()
if base is not None:
    sig = repr(base.to_dict())
    if st.session_state.get("_sched.base_sig") != sig or E + "name" not in st.session_state:
        load_editor(base)
        st.session_state["_sched.base_sig"] = sig
if E + "name" not in st.session_state:
    st.stop()

st.subheader("Edit")
data = editor()
schedule, error = None, None
try:
    schedule = Schedule.from_dict(data)
    if len(data["order"]) != len(GROUPS):
        missing = [GROUP_LABELS[g] for g in GROUPS if g not in data["order"]]
        raise ScheduleError(f"the group order must list all four groups; missing: {', '.join(missing)}")
    schedule.validate()
except ScheduleError as e:
    error = e

st.subheader("Timeline")
if error is not None:
    show_error(error, "This schedule cannot run: ")
if schedule is not None and len(schedule.order) == len(GROUPS):
    show_chart(timeline(schedule))
    if error is None:
        hp = schedule.hparams
        last = schedule.last_event_step()
        c = st.columns(4)
        c[0].metric("removal events", len(schedule.events()))
        c[1].metric("last removal at step", last)
        c[2].metric("recovery steps after it", hp.max_steps - last)
        c[3].metric("tokens in all", f"{hp.tokens_per_step * hp.max_steps / 1e6:,.1f} M")
    with st.expander("Removal events"):
        st.dataframe(events_frame(schedule), hide_index=True, width="stretch")

if error is not None:
    # Train must not go on with the last valid design as if it were this one.
    had = st.session_state.pop("designed_schedule", None) is not None
    st.session_state["designed_schedule_error"] = str(error)
    if had:
        st.warning("The Train page's \"designed\" schedule is cleared until this design can run.",
                   icon=":material/warning:")
if error is None and schedule is not None:
    st.session_state["designed_schedule"] = schedule.to_dict()
    st.session_state.pop("designed_schedule_error", None)
    st.success(f"Designed schedule ready for training: {schedule_summary(schedule)}", icon=":material/check:")
    stem = (schedule.name or "schedule").replace("/", "_")
    c1, c2, c3 = st.columns([1, 1, 2])
    c1.download_button("Download YAML", schedule_to_text(schedule, "yaml"), file_name=f"{stem}.yaml",
                       mime="application/x-yaml", icon=":material/download:")
    c2.download_button("Download JSON", schedule_to_text(schedule, "json"), file_name=f"{stem}.json",
                       mime="application/json", icon=":material/download:")
    with c3:
        page_link("pages/train.py", label="Train with this schedule", icon=":material/arrow_forward:")
