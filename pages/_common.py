"""Widgets and charts shared by lnfree's pages (not a page itself: app.py registers pages explicitly).

Session-state keys other pages rely on:
  runs_root          the runs root (sidebar text input in app.py; default ./runs)
  designed_schedule  the last valid schedule made on the Schedule page (Schedule.to_dict())
  selected_runs      run names picked on the Runs page (also passed to analysis pages as ?runs=a&runs=b)
Widgets drawn with **PERSIST keep their values when the user changes page and comes back.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import altair as alt
import pandas as pd
import streamlit as st

from lnfree_core.ui_data import GROUP_LABELS

DEFAULT_RUNS_ROOT = "runs"
PAGES_KEY = "_lnfree_pages"
WORKBENCH_SECTION, ANALYSIS_SECTION = "Workbench", "Analyse"  # app.py's sections
DEMO_MODELS = ("original", "vanilla", "ln-free")
MODEL_KINDS = {"hub": "Hub id", "folder": "local folder", "run": "a run", "demo": "demo model"}
GROUP_COLORS = {"LN_MLP": "#1f77b4", "LN_qk": "#ff7f0e", "LN_v": "#2ca02c", "LN_f": "#d62728"}


def _persist_kwargs() -> dict[str, str]:
    """Widget kwargs that keep a keyed widget's value across page changes (Streamlit >= 1.67's
    persist_state="session"); empty on older Streamlit, where values reset when the page changes."""
    import inspect

    try:
        ok = "persist_state" in inspect.signature(st.number_input).parameters
    except (TypeError, ValueError):
        ok = False
    return {"persist_state": "session"} if ok else {}


PERSIST = _persist_kwargs()
_executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="lnfree-ui")


# ---------------------------------------------------------------------------------------- app state
def runs_root() -> Path:
    """The runs root chosen in the sidebar (absolute); ./runs by default."""
    value = st.session_state.get("runs_root") or DEFAULT_RUNS_ROOT
    return Path(str(value)).expanduser().resolve()


def runs_root_sidebar() -> Path:
    """The sidebar's runs-root input (called by app.py on every page)."""
    if "runs_root" not in st.session_state:
        st.session_state["runs_root"] = DEFAULT_RUNS_ROOT
    st.sidebar.text_input("Runs root", key="runs_root",
                          help="Folder that holds one sub-folder per training run (created on first launch).")
    root = runs_root()
    st.sidebar.caption(f"`{root}`" + ("" if root.exists() else " (does not exist yet)"))
    return root


def seed(key: str, value: Any) -> None:
    """Give a widget key its first value (only if it has none), before the widget is drawn."""
    if key not in st.session_state:
        st.session_state[key] = value


def register_pages(pages: dict[str, tuple[str, str]]) -> None:
    """app.py records the registered pages ({file path: (section, title)}) so pages link only to those."""
    st.session_state[PAGES_KEY] = dict(pages)


def page_registered(path: str) -> bool:
    return path in (st.session_state.get(PAGES_KEY) or {})


def registered_pages(section: str | None = None) -> dict[str, str]:
    """{file path: title} of the registered pages (of one section of app.py's PAGES if given)."""
    pages = st.session_state.get(PAGES_KEY) or {}
    return {p: title for p, (sec, title) in pages.items() if section is None or sec == section}


def page_link(path: str, label: str | None = None, icon: str | None = None,
              query_params: dict[str, Any] | None = None) -> bool:
    """st.page_link to `path` if app.py registered it; returns whether a link was drawn."""
    if not page_registered(path):
        return False
    st.page_link(path, label=label or st.session_state[PAGES_KEY][path][1], icon=icon, query_params=query_params)
    return True


def selected_runs() -> list[str]:
    """Run names picked on the Runs page (query parameter `runs` first, then session state)."""
    q = st.query_params.get_all("runs")
    if q:
        return [r for item in q for r in item.split(",") if r]
    return list(st.session_state.get("selected_runs") or [])


def show_error(e: BaseException, prefix: str = "") -> None:
    st.error(f"{prefix}{e}", icon=":material/error:")


# ---------------------------------------------------------------------------------------- background work
def run_in_background(key: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Future:
    """Run `fn` in a worker thread (the page stays responsive); its Future is kept in session state."""
    fut = _executor.submit(fn, *args, **kwargs)
    st.session_state[f"_bg.{key}"] = fut
    return fut


def background_future(key: str) -> Future | None:
    return st.session_state.get(f"_bg.{key}")


def clear_background(key: str) -> None:
    st.session_state.pop(f"_bg.{key}", None)


# ---------------------------------------------------------------------------------------- environment
def demo_available() -> bool:
    """Whether this install has the demo suite (lnfree_core.demo)."""
    try:
        return importlib.util.find_spec("lnfree_core.demo") is not None
    except (ImportError, ValueError):
        return False


@st.cache_data(ttl=60, show_spinner=False)
def gpu_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


@st.cache_data(ttl=30, show_spinner=False)
def hub_reachable() -> bool:
    from lnfree_core.data import hub_reachable as probe

    return probe()


def model_layers(spec: str) -> int | None:
    """The layer count of a model spec when it is known without loading weights (else None)."""
    from lnfree_core.presets import HUB_IDS, preset

    for name, hub_id in HUB_IDS.items():
        if spec in (name, hub_id):
            return preset(name).n_layers
    path = Path(spec.partition("@")[0])
    for cfg in (path / "config.json", *sorted((path / "checkpoints").glob("step_*/config.json"))[-1:]):
        try:
            data = json.loads(cfg.read_text())
        except (OSError, ValueError):
            continue
        for key in ("n_layer", "num_hidden_layers"):
            if isinstance(data.get(key), int):
                return data[key]
    return None


# ---------------------------------------------------------------------------------------- pickers
def _runs(root: Path, states: Sequence[str] | None = None) -> list[Any]:
    import jobs

    return [s for s in jobs.list_runs(root) if states is None or s.state in states]


def run_picker(key: str, *, label: str = "Run", states: Sequence[str] | None = None, multi: bool = False,
               root: Path | None = None, help: str | None = None) -> Any:
    """Pick run(s) under the runs root: a run name (or None), or a list of names when `multi`."""
    runs = _runs(root or runs_root(), states)
    names = [s.name for s in runs]
    by_name = {s.name: s for s in runs}

    def fmt(n: str) -> str:
        s = by_name.get(n)
        return f"{n} ({s.state}, step {s.step}/{s.max_steps or '?'})" if s else n

    if multi:
        if key in st.session_state:
            st.session_state[key] = [n for n in st.session_state[key] if n in names]
        return st.multiselect(label, names, key=key, **PERSIST, format_func=fmt, help=help)
    if key in st.session_state and st.session_state[key] not in names:
        del st.session_state[key]
    return st.selectbox(label, names, key=key, **PERSIST, format_func=fmt, index=0 if names else None,
                        placeholder="no runs yet" if not names else "choose a run", help=help)


def model_picker(key: str, *, label: str = "Base model", kinds: Sequence[str] = tuple(MODEL_KINDS),
                 root: Path | None = None, default_hub: str = "openai-community/gpt2") -> str | None:
    """A model to load: a Hub id, a local Hugging Face folder, a run (its newest checkpoint) or a demo model.

    Returns the spec lnfree_core.models.load_model accepts, or None (with a message) when the choice is
    not usable yet. Widget keys: `{key}.kind`, `{key}.hub`, `{key}.folder`, `{key}.run`, `{key}.demo`
    (give a key starting with 'pick.', 'train.' etc. to keep the choice across pages).
    """
    from lnfree_core.presets import HUB_IDS

    kind = st.radio(label, list(kinds), key=f"{key}.kind", **PERSIST, format_func=MODEL_KINDS.get, horizontal=True)
    if kind == "hub":
        options = list(HUB_IDS.values())
        seed(f"{key}.hub", default_hub)
        spec = st.selectbox("Hub id", options, key=f"{key}.hub", **PERSIST, accept_new_options=True,
                            help="One of the paper's models, or type any GPT-2-family id.")
        if spec and not hub_reachable():
            st.warning("The Hugging Face Hub is not reachable: this works only if the model is in the local "
                       "Hub cache. Use a local folder or the demo suite otherwise.", icon=":material/cloud_off:")
        return spec or None
    if kind == "folder":
        path = st.text_input("Model folder", key=f"{key}.folder", **PERSIST, placeholder="/path/to/hf-model-folder",
                             help="A Hugging Face model folder (config.json + *.safetensors), e.g. an lnfree export.")
        if not path:
            return None
        p = Path(path).expanduser()
        if not (p / "config.json").is_file():
            st.error(f"`{p}` is not a Hugging Face model folder (no config.json).")
            return None
        if not any(p.glob("*.safetensors")):
            st.error(f"`{p}` has no .safetensors weights; lnfree loads only safetensors.")
            return None
        n = model_layers(str(p))
        st.caption(f"{n} layers" if n else "layer count unknown")
        return str(p.resolve())
    if kind == "run":
        rroot = root or runs_root()
        runs = [s for s in _runs(rroot) if (Path(s.run_dir) / "checkpoints").is_dir()]
        names = [s.name for s in runs]
        if not names:
            st.info("No run with a checkpoint under the runs root yet.")
            return None
        if key + ".run" in st.session_state and st.session_state[key + ".run"] not in names:
            del st.session_state[key + ".run"]
        name = st.selectbox("Run (its newest checkpoint)", names, key=f"{key}.run", **PERSIST,
                            format_func=lambda n: f"{n} ({next(s.state for s in runs if s.name == n)})")
        return str(rroot / name) if name else None
    if kind == "demo":
        if not demo_available():
            st.info("Demo suite not available in this install.", icon=":material/info:")
            return None
        name = st.selectbox("Demo model", DEMO_MODELS, key=f"{key}.demo", **PERSIST)
        return f"demo:{name}"
    raise ValueError(f"unknown model kind {kind!r}")


def dataset_picker(key: str, *, label: str = "Dataset") -> str | None:
    """A registry dataset (owt, pile, pile-filtered) or a local file/folder; returns its name/path or None.

    Widget keys: `{key}.name`, `{key}.path`.
    """
    from lnfree_core.data import DatasetNotFoundError, list_datasets, resolve_dataset

    specs = {s.name: s for s in list_datasets()}
    options = [*specs, "local"]
    choice = st.selectbox(label, options, key=f"{key}.name", **PERSIST,
                          format_func=lambda n: "local file or folder" if n == "local" else f"{n} (Hub)")
    if choice != "local":
        spec = specs[choice]
        st.caption(f"{spec.description} {spec.size}".strip())
        if not hub_reachable():
            st.warning(f"`{choice}` streams from the Hugging Face Hub, which is not reachable now.",
                       icon=":material/cloud_off:")
        return choice
    path = st.text_input("Data path", key=f"{key}.path", **PERSIST, placeholder="/path/to/data.parquet or folder",
                         help="A .parquet/.jsonl/.txt file or a folder of them, with input_ids or text rows.")
    if not path:
        return None
    try:
        spec = resolve_dataset(str(Path(path).expanduser()))
    except (DatasetNotFoundError, ValueError, OSError) as e:
        st.error(str(e))
        return None
    st.caption(f"{spec.description}; splits: {', '.join(spec.split_names)}")
    return str(Path(path).expanduser().resolve())


# ---------------------------------------------------------------------------------------- charts
def group_color_scale() -> alt.Scale:
    return alt.Scale(domain=list(GROUP_COLORS), range=list(GROUP_COLORS.values()))


def removal_rules(events: pd.DataFrame, *, legend: bool = True) -> alt.Chart:
    """One vertical rule per removal event (events_frame / removal_frame rows), coloured by group."""
    tooltip = [alt.Tooltip("name:N", title="block"), alt.Tooltip("step:Q"), alt.Tooltip("group:N")]
    if "sigma" in events.columns:
        tooltip.append(alt.Tooltip("sigma:Q", format=".4g", title="frozen sigma"))
    return (
        alt.Chart(events)
        .mark_rule(strokeWidth=1.5, opacity=0.55)
        .encode(
            x=alt.X("step:Q"),
            color=alt.Color("group:N", scale=group_color_scale(),
                            legend=alt.Legend(title="removal", orient="bottom") if legend else None),
            tooltip=tooltip,
        )
    )


def metric_chart(df: pd.DataFrame, *, title: str, log: bool = False, events: pd.DataFrame | None = None,
                 height: int = 220, color: str = "run") -> alt.LayerChart | alt.Chart:
    """Lines of `value` over `step`, one per `color` (run), with removal rules layered behind them."""
    data = df[df["value"] > 0] if log else df
    line = (
        alt.Chart(data)
        .mark_line(strokeWidth=1.5)
        .encode(
            x=alt.X("step:Q", title="step"),
            y=alt.Y("value:Q", title=None, scale=alt.Scale(type="log" if log else "linear", zero=False)),
            color=alt.Color(f"{color}:N", legend=alt.Legend(title=None, orient="top")),
            tooltip=[alt.Tooltip(f"{color}:N"), alt.Tooltip("step:Q"), alt.Tooltip("value:Q", format=".5g")],
        )
    )
    chart: alt.LayerChart | alt.Chart = line
    if events is not None and not events.empty:
        chart = alt.layer(removal_rules(events, legend=False), line).resolve_scale(color="independent")
    return chart.properties(title=title, height=height)


def sigma_chart(df: pd.DataFrame, *, log: bool = False, events: pd.DataFrame | None = None,
                height: int = 260) -> alt.LayerChart | alt.Chart:
    """Each block's tracked sigma over the steps (sigma_frame rows), coloured by group."""
    data = df[df["sigma"] > 0] if log else df
    line = (
        alt.Chart(data)
        .mark_line(strokeWidth=1, opacity=0.85)
        .encode(
            x=alt.X("step:Q", title="step"),
            y=alt.Y("sigma:Q", title=None, scale=alt.Scale(type="log" if log else "linear", zero=False)),
            color=alt.Color("group:N", scale=group_color_scale(), legend=alt.Legend(title=None, orient="top")),
            detail="block:N",
            tooltip=[alt.Tooltip("block:N"), alt.Tooltip("step:Q"), alt.Tooltip("sigma:Q", format=".5g")],
        )
    )
    chart: alt.LayerChart | alt.Chart = line
    if events is not None and not events.empty:
        chart = alt.layer(removal_rules(events, legend=False), line)
    return chart.properties(title="sigma of each LN block (frozen at removal)", height=height)
