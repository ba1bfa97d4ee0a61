"""Widgets and charts shared by lnfree's pages (not a page itself: app.py registers pages explicitly).

Session-state keys other pages rely on:
  runs_root          the runs root (sidebar text input in app.py; default ./runs)
  designed_schedule  the last valid schedule made on the Schedule page (Schedule.to_dict())
  selected_runs      run names picked on the Runs page (also passed to analysis pages as ?runs=a&runs=b)
Widgets drawn with **PERSIST keep their values when the user changes page and comes back.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

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
def page_setup() -> None:
    """Call first in every page file: makes sure app.py (page list, sidebar, settings) runs around it.

    Streamlit has an old pages-directory mode: with a pages/ folder next to app.py it starts out
    running pages/*.py on their own when a browser's first request after the server started is a page
    URL (/train); app.py's st.navigation ends that mode, but only once app.py has run. So if this page
    runs in that mode, end it and rerun: the rerun goes through app.py to the same page.
    """
    try:
        from streamlit.runtime.pages_manager import PagesManager
    except ImportError:  # pragma: no cover - a Streamlit without the old mode
        return
    if getattr(PagesManager, "uses_pages_directory", None):
        PagesManager.uses_pages_directory = False
        st.rerun()


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
    """Whether this install can load demo-suite models (`demo:NAME`)."""
    from lnfree_core.ui_data import demo_models_available

    return demo_models_available()


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
        from lnfree_core.ui_data import built_demo_models

        specs = built_demo_models()
        if not specs:
            st.info("The demo suite is not built yet: build it on the Home page "
                    "(or `python -m lnfree_core demo build`).", icon=":material/info:")
            return None
        if st.session_state.get(f"{key}.demo") not in specs:
            st.session_state.pop(f"{key}.demo", None)
        return st.selectbox("Demo model", specs, key=f"{key}.demo", **PERSIST)
    raise ValueError(f"unknown model kind {kind!r}")


def dataset_picker(key: str, *, label: str = "Dataset") -> str | None:
    """A registry dataset (owt, pile, pile-filtered), a built demo-suite dataset (its folder) or a local
    file/folder; returns its name/path or None.

    Widget keys: `{key}.name`, `{key}.path`.
    """
    from lnfree_core.data import DatasetNotFoundError, list_datasets, resolve_dataset
    from lnfree_core.ui_data import built_demo_datasets

    specs = {s.name: s for s in list_datasets()}
    demo = built_demo_datasets()
    options = [*specs, *demo, "local"]
    if st.session_state.get(f"{key}.name") not in options:
        st.session_state.pop(f"{key}.name", None)

    def fmt(n: str) -> str:
        return "local file or folder" if n == "local" else f"{n} (demo suite)" if n in demo else f"{n} (Hub)"

    choice = st.selectbox(label, options, key=f"{key}.name", format_func=fmt, **PERSIST)
    if choice in demo:
        st.caption(f"Offline demo-suite data in `{demo[choice]}`")
        return demo[choice]
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
# Charts are plain Vega-Lite specs (dicts) shown with show_chart(): building them is cheap, which
# matters for the Train page's live view (Altair's spec building and validation cost about a second
# for six charts on a small CPU, too slow to redraw every few seconds). Data go in spec["datasets"]
# as DataFrames; Streamlit ships them as Arrow.
RUN_COLORS = ["#222222", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22"]


def group_color_scale() -> dict:
    return {"domain": list(GROUP_COLORS), "range": list(GROUP_COLORS.values())}


def show_chart(spec: dict) -> None:
    """Draw a Vega-Lite spec made by the helpers below, as wide as the page."""
    st.vega_lite_chart(spec=spec, width="stretch")


def layered_chart(layers: list[dict], datasets: dict[str, pd.DataFrame], *, title: str, height: int,
                  independent_colors: bool = False) -> dict:
    """A layered Vega-Lite spec with `height` px of plot area (axes, title and legends come on top)."""
    spec: dict[str, Any] = {
        "title": title, "height": height, "autosize": {"type": "fit-x", "contains": "padding"},
        "layer": layers, "datasets": datasets,
    }
    if independent_colors:
        spec["resolve"] = {"scale": {"color": "independent"}}
    return spec


def removal_rules(data_name: str, events: pd.DataFrame, *, legend: bool = True) -> dict:
    """A layer with one vertical rule per removal event (rows of events_frame / removal_frame), coloured
    by group; `data_name` is its dataset's name in the chart's spec["datasets"]."""
    tooltip = [{"field": "name", "type": "nominal", "title": "block"}, {"field": "step", "type": "quantitative"},
               {"field": "group", "type": "nominal"}]
    if "sigma" in events.columns:
        tooltip.append({"field": "sigma", "type": "quantitative", "format": ".4g", "title": "frozen sigma"})
    return {
        "data": {"name": data_name},
        "mark": {"type": "rule", "strokeWidth": 1.5, "opacity": 0.55},
        "encoding": {
            "x": {"field": "step", "type": "quantitative"},
            "color": {"field": "group", "type": "nominal", "scale": group_color_scale(),
                      "legend": {"title": "removal", "orient": "bottom"} if legend else None},
            "tooltip": tooltip,
        },
    }


def _events_data(events: pd.DataFrame) -> pd.DataFrame:
    cols = [c for c in ("step", "name", "group", "sigma") if c in events.columns]
    return events[cols].reset_index(drop=True)


def _y(field: str, log: bool, title: str | None = None, fmt: str | None = None) -> dict:
    y: dict[str, Any] = {"field": field, "type": "quantitative", "title": title,
                         "scale": {"type": "log" if log else "linear", "zero": False}}
    if fmt:
        y["axis"] = {"format": fmt}
    return y


def metric_chart(df: pd.DataFrame, *, title: str, log: bool = False, events: pd.DataFrame | None = None,
                 height: int = 180, color: str = "run") -> dict:
    """Lines of `value` over `step`, one per `color` (run), with removal rules layered behind them."""
    data = df[df["value"] > 0] if log else df
    line = {
        "data": {"name": "series"},
        "mark": {"type": "line", "strokeWidth": 1.5},
        "encoding": {
            "x": {"field": "step", "type": "quantitative", "title": "step"},
            "y": _y("value", log),
            "color": {"field": color, "type": "nominal", "scale": {"range": RUN_COLORS},
                      "legend": {"title": None, "orient": "top"}},
            "tooltip": [{"field": color, "type": "nominal"}, {"field": "step", "type": "quantitative"},
                        {"field": "value", "type": "quantitative", "format": ".5g"}],
        },
    }
    datasets = {"series": data[["step", "value", color]].reset_index(drop=True)}
    layers = [line]
    if events is not None and not events.empty:
        layers = [removal_rules("removals", events, legend=False), line]
        datasets["removals"] = _events_data(events)
    return layered_chart(layers, datasets, title=title, height=height, independent_colors=True)


def sigma_chart(df: pd.DataFrame, *, log: bool = False, events: pd.DataFrame | None = None,
                height: int = 180) -> dict:
    """Each block's tracked sigma over the steps (sigma_frame rows), coloured by group, with removal rules."""
    data = df[df["sigma"] > 0] if log else df
    line = {
        "data": {"name": "sigma"},
        "mark": {"type": "line", "strokeWidth": 1, "opacity": 0.85},
        "encoding": {
            "x": {"field": "step", "type": "quantitative", "title": "step"},
            "y": _y("sigma", log),
            "color": {"field": "group", "type": "nominal", "scale": group_color_scale(),
                      "legend": {"title": None, "orient": "top"}},
            "detail": {"field": "block", "type": "nominal"},
            "tooltip": [{"field": "block", "type": "nominal"}, {"field": "step", "type": "quantitative"},
                        {"field": "sigma", "type": "quantitative", "format": ".5g"}],
        },
    }
    datasets = {"sigma": data[["step", "block", "group", "sigma"]].reset_index(drop=True)}
    layers = [line]
    if events is not None and not events.empty:
        layers = [removal_rules("removals", events, legend=False), line]
        datasets["removals"] = _events_data(events)
    return layered_chart(layers, datasets, title="sigma of each LN block (frozen at removal)", height=height)


# ---------------------------------------------------------------------------------------- analysis pages
# Shared by Compare, Outliers, First tokens, Confidence neurons and DLA. Session-state keys:
#   analysis.models      the model set (specs), one picker shared by every analysis page
#   analysis.datasets    the datasets of the Compare page; analysis.dataset: the one of the other pages
#   analysis.n, analysis.seq_len, analysis.split   how many sequences of how many tokens
#   analysis.cache_dir, analysis.device, analysis.batch_size   where results are cached, how they run
# Query parameters: ?runs=a&runs=b (from the Runs page) puts those runs, and the base models they were
# fine-tuned from, in the model set; ?dataset=NAME_OR_PATH picks the dataset.
MODELS_KEY = "analysis.models"
DEFAULT_CACHE_DIR = "lnfree_cache"  # as the CLI's --cache-dir default, so both share results
DEFAULT_N_SEQUENCES, DEFAULT_SEQ_LEN = 8, 128  # GPT-2 Small on 2 CPU cores: about 3 s per model
PAPER_MODELS = (  # the paper's models (appendix A), in Table 1 order
    "openai-community/gpt2", "schaeff/gpt2-small_vanilla300", "schaeff/gpt2-small_LNFree300",
    "openai-community/gpt2-medium", "schaeff/gpt2-medium_vanilla500", "schaeff/gpt2-medium_LNFree500",
    "openai-community/gpt2-large", "schaeff/gpt2-large_vanilla600", "schaeff/gpt2-large_LNFree600",
    "openai-community/gpt2-xl", "schaeff/gpt2-xl_vanilla800", "schaeff/gpt2-xl_LNFree800",
)


MODEL_PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
                 "#bcbd22", "#17becf"]  # in model-set order: original blue, vanilla orange, LN-free green


def model_color(labels: Sequence[str], *, legend: bool = True, field: str = "model") -> Any:
    """The colour channel (alt.Color) of analysis charts: one colour per model, in the model set's
    order, the same on every chart and page."""
    import altair as alt

    scale = alt.Scale(domain=list(labels), range=[MODEL_PALETTE[i % len(MODEL_PALETTE)] for i in range(len(labels))])
    return alt.Color(f"{field}:N", scale=scale, sort=list(labels),
                     legend=alt.Legend(title=None, orient="top") if legend else None)


def fit_chart(chart: Any, height: int) -> Any:
    """An Altair chart with `height` px of plot area (title, axes and legends come on top) and its
    width fitted to the page (draw with width="stretch")."""
    import altair as alt

    return chart.properties(height=height, autosize=alt.AutoSizeParams(type="fit-x", contains="padding"))


def shared_widget(store: str, draw: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Draw a widget whose value is shared by several pages and kept in the plain session key `store`.

    A widget with the same key on two pages is a new widget after a page switch, so Streamlit's
    persist_state cannot carry its value over (it starts from its default for one run). Instead the
    widget is keyed `store + "#w"`, loaded from `store` before it is drawn, and every change is
    written back to `store` (on_change, before the rerun), which pages and tests read and set.
    """
    wkey = store + "#w"
    if store in st.session_state:
        st.session_state[wkey] = st.session_state[store]

    def sync() -> None:
        st.session_state[store] = st.session_state[wkey]

    value = draw(*args, key=wkey, on_change=sync, **kwargs)
    st.session_state[store] = value
    return value


def analysis_errors() -> tuple[type[BaseException], ...]:
    """What an analysis can fail with for a user's reason (missing model or data, offline Hub, a
    sequence longer than the model's context): shown as a message, the page goes on."""
    return (OSError, ValueError, RuntimeError, KeyError, IndexError, ImportError)


def _query_runs(root: Path) -> list[str]:
    return [str(root / n) for n in selected_runs() if (root / n).is_dir()] if st.query_params.get_all("runs") else []


def _base_models(run_dirs: Sequence[str]) -> list[str]:
    """The usable base models the runs were fine-tuned from (their request's `model`), deduplicated."""
    from lnfree_core.ui_data import model_spec_problem, run_request

    out: list[str] = []
    for rd in run_dirs:
        base = run_request(rd).get("model")
        if isinstance(base, str) and base and base not in out and model_spec_problem(base, hub_reachable()) is None:
            out.append(base)
    return out


def default_models() -> list[str]:
    """The model set a session starts with: the Runs page's selection (and the base models), else the
    paper's GPT-2 Small triple when the Hub answers, else the demo suite, else finished runs."""
    from lnfree_core.ui_data import demo_catalog

    root = runs_root()
    picked = [str(root / n) for n in selected_runs() if (root / n / "checkpoints").is_dir()]
    if picked:
        return _base_models(picked) + picked
    if hub_reachable():
        return list(PAPER_MODELS[:3])
    demo = list(demo_catalog()["models"].values())
    if demo:
        return demo
    finished = [s for s in _runs(root, ("finished",)) if (Path(s.run_dir) / "checkpoints").is_dir()]
    return [str(Path(s.run_dir)) for s in finished[:3]]


def _add_model(spec: str | None) -> None:
    if spec:
        current = list(st.session_state.get(MODELS_KEY) or [])
        if spec not in current:
            st.session_state[MODELS_KEY] = current + [spec]


def model_set_picker(*, label: str = "Models", help: str | None = None) -> list[str]:
    """The analysis pages' shared model set: several models (Hub ids, local folders, runs, demo models).

    A multiselect of specs (type a Hub id or a folder path to add it, or use "Add a model", which
    offers the model picker of the Train page); the selection persists across the analysis pages.
    Returns the usable specs (those with a problem are reported and left out).
    """
    from lnfree_core.ui_data import demo_catalog, model_option_text, model_spec_problem

    root = runs_root()
    if MODELS_KEY not in st.session_state:
        st.session_state[MODELS_KEY] = default_models()
    q = tuple(st.query_params.get_all("runs"))
    if q and st.session_state.get("_analysis.q_runs") != q:  # arrived from the Runs page with new runs
        st.session_state["_analysis.q_runs"] = q
        runs = _query_runs(root)
        if runs:
            st.session_state[MODELS_KEY] = _base_models(runs) + runs
    current = list(st.session_state.get(MODELS_KEY) or [])
    runs = [str(Path(s.run_dir)) for s in _runs(root) if (Path(s.run_dir) / "checkpoints").is_dir()]
    options = list(dict.fromkeys([*current, *demo_catalog()["models"].values(), *runs, *PAPER_MODELS]))
    specs = shared_widget(MODELS_KEY, st.multiselect, label, options, format_func=model_option_text,
                          accept_new_options=True, placeholder="choose models, or type a Hub id or folder path",
                          help=help or "Shared by every analysis page. Runs use their newest checkpoint "
                                       "(`RUN_DIR@STEP` picks another). Type a Hub id or a folder path to add it.")
    with st.popover("Add a model", icon=":material/add:"):
        spec = model_picker("analysis.add", label="Source", root=root)
        st.button("Add to the set", key="analysis_add_model", on_click=_add_model, args=(spec,), disabled=not spec,
                  icon=":material/add:")
    hub = hub_reachable()
    usable = []
    for s in specs:
        problem = model_spec_problem(s, hub)
        if problem:
            st.warning(problem + " Left out.", icon=":material/warning:")
        else:
            usable.append(s)
    return usable


def model_labels(specs: Sequence[str]) -> dict[str, str]:
    """{spec: unique short label} for charts and tables."""
    from lnfree_core.ui_data import unique_labels

    return unique_labels(specs)


def _dataset_options() -> tuple[list[str], dict[str, str]]:
    """(dataset options, {option: text}): the demo suite's datasets, the registry's, in that order."""
    from lnfree_core.data import list_datasets
    from lnfree_core.ui_data import demo_catalog

    texts = {path: f"demo: {name}" for name, path in demo_catalog()["datasets"].items()}
    texts.update({s.name: f"{s.name} (Hub)" for s in list_datasets()})
    return list(texts), texts


def default_datasets(multi: bool) -> list[str]:
    """?dataset=, else the demo suite's datasets when the Hub does not answer, else the paper's."""
    from lnfree_core.ui_data import demo_catalog

    q = st.query_params.get_all("dataset")
    if q:
        return list(q)
    demo = list(demo_catalog()["datasets"].values())
    if demo and not hub_reachable():
        return demo if multi else demo[-1:]
    return ["owt", "pile", "pile-filtered"] if multi else ["pile-filtered"]


def _dataset_text(value: str, texts: dict[str, str]) -> str:
    return texts.get(value) or f"local: {Path(value).name or value}"


def _check_dataset(value: str) -> str | None:
    from lnfree_core.data import DatasetNotFoundError, resolve_dataset

    try:
        spec = resolve_dataset(str(Path(value).expanduser()) if Path(value).expanduser().exists() else value)
    except (DatasetNotFoundError, ValueError, OSError) as e:
        return str(e)
    if spec.source == "hub" and not hub_reachable():
        return (f"`{value}` streams from the Hugging Face Hub, which is not reachable now: only results "
                "already in the analysis cache can be shown.")
    return None


def analysis_dataset_picker(*, multi: bool = False, label: str | None = None) -> list[str]:
    """Dataset(s) for the analyses: demo-suite datasets, the registry's (owt, pile, pile-filtered) or a
    typed local path (.parquet/.jsonl/.txt file or folder). Returns the chosen names/paths."""
    key = "analysis.datasets" if multi else "analysis.dataset"
    options, texts = _dataset_options()
    q = tuple(st.query_params.get_all("dataset"))
    if key not in st.session_state or (q and st.session_state.get(f"_{key}.q") != q):
        st.session_state[f"_{key}.q"] = q
        defaults = default_datasets(multi)
        st.session_state[key] = defaults if multi else defaults[0]
    current = st.session_state.get(key)
    extra = [c for c in (current if isinstance(current, list) else [current]) if c and c not in options]
    options = options + extra
    hint = "type a local path (.parquet, .jsonl, .txt or a folder) to add it"
    if multi:
        chosen = shared_widget(key, st.multiselect, label or "Datasets", options, accept_new_options=True,
                               format_func=lambda v: _dataset_text(v, texts), placeholder=hint)
    else:
        one = shared_widget(key, st.selectbox, label or "Dataset", options, accept_new_options=True,
                            format_func=lambda v: _dataset_text(v, texts), placeholder=hint)
        chosen = [one] if one else []
    for value in chosen:
        problem = _check_dataset(value)
        if problem:
            st.caption(f":orange[{problem}]")
    return [str(Path(v).expanduser().resolve()) if Path(v).expanduser().exists() else v for v in chosen]


def data_size_inputs(specs: Sequence[str] = (), *, n_default: int = DEFAULT_N_SEQUENCES,
                     seq_len_default: int = DEFAULT_SEQ_LEN) -> tuple[int, int, str | None]:
    """(sequences, tokens per sequence, split or None = the dataset's evaluation split); shared keys.
    The tokens per sequence start at `seq_len_default` or the shortest context of `specs`' models."""
    from lnfree_core.ui_data import model_context

    contexts = {s: model_context(s) for s in specs}
    known = [c for c in contexts.values() if c]
    seed("analysis.n", n_default)
    seed("analysis.seq_len", min([seq_len_default, *known]))
    seed("analysis.split", "")
    c1, c2, c3 = st.columns(3)
    n = shared_widget("analysis.n", c1.number_input, "Sequences", min_value=1, max_value=100_000, step=8,
                      help="The first N sequences of the split (the paper: 1,000 for the analyses, 10,000 "
                           "for Table 1). Small values compute in seconds on a CPU.")
    seq_len = shared_widget("analysis.seq_len", c2.number_input, "Tokens per sequence", min_value=2, max_value=8192,
                            step=64, help="The paper uses 1024 for Table 1 and 512 for the analyses; at most "
                                          "the model's context length.")
    split = shared_widget("analysis.split", c3.text_input, "Split", placeholder="evaluation split",
                          help="Empty: the dataset's evaluation split (owt: validation).")
    too_long = [s for s, c in contexts.items() if c and c < seq_len]
    if too_long:
        st.warning(f"{int(seq_len)} tokens exceed the context of " + ", ".join(
            f"{model_labels(specs)[s]} ({contexts[s]})" for s in too_long) + ": those models will fail.",
            icon=":material/warning:")
    return int(n), int(seq_len), (split.strip() or None)


def analysis_settings() -> dict[str, Any]:
    """Where results are cached and how they run: {'cache_dir', 'device', 'batch_size'} (an expander)."""
    seed("analysis.cache_dir", DEFAULT_CACHE_DIR)
    seed("analysis.device", "auto")
    seed("analysis.batch_size", 8)
    with st.expander("Computation settings", icon=":material/settings:"):
        c1, c2, c3 = st.columns([3, 1, 1])
        cache = shared_widget("analysis.cache_dir", c1.text_input, "Result cache folder",
                              help="Results are stored here and never computed twice (shared with "
                                   "`python -m lnfree_core eval/analyze --cache-dir`).")
        devices = ["auto", "cpu"] + [f"cuda:{i}" for i in range(gpu_count())]
        if st.session_state.get("analysis.device") not in devices:
            st.session_state["analysis.device"] = "auto"
        device = shared_widget("analysis.device", c2.selectbox, "Device", devices)
        batch = shared_widget("analysis.batch_size", c3.number_input, "Batch size", min_value=1, max_value=512)
    root = Path(str(cache or DEFAULT_CACHE_DIR)).expanduser().resolve()
    return {"cache_dir": str(root), "device": device, "batch_size": int(batch)}


class JobProgress:
    """One progress bar over several analysis jobs, fed by the analyses' progress(done, total) callbacks."""

    def __init__(self, n_jobs: int):
        self.n_jobs = n_jobs
        self.slot = st.empty()

    def callback(self, job: int, label: str) -> Callable[[int, int], None]:
        from lnfree_core.ui_data import job_fraction

        def report(done: int, total: int) -> None:
            self.slot.progress(job_fraction(job, self.n_jobs, done, total),
                               text=f"{label}: {done} of {total} sequences (job {job + 1} of {self.n_jobs})")

        self.slot.progress(job_fraction(job, self.n_jobs, 0, 1), text=f"{label}: starting (job {job + 1} of "
                                                                       f"{self.n_jobs})")
        return report

    def clear(self) -> None:
        self.slot.empty()


def run_jobs(jobs: Sequence[tuple[Any, str, Callable[[Callable[[int, int], None]], Any]]]) -> dict[Any, Any]:
    """Run analysis jobs [(key, label, fn(progress) -> result)] one after the other under one progress
    bar; a job that fails is reported (st.error) and left out. Returns {key: result}."""
    bar = JobProgress(len(jobs))
    out: dict[Any, Any] = {}
    failures = []
    for i, (key, label, fn) in enumerate(jobs):
        try:
            out[key] = fn(bar.callback(i, label))
        except analysis_errors() as e:
            failures.append((label, e))
    bar.clear()
    for label, e in failures:
        st.error(f"{label}: {type(e).__name__}: {e}", icon=":material/error:")
    return out


def data_spec(dataset: str, n: int, seq_len: int, split: str | None):
    """The analysis DataSpec of a dataset choice."""
    from lnfree_core.analysis.cached import DataSpec

    return DataSpec(dataset=dataset, split=split, n=n, seq_len=seq_len)


def dataset_label(dataset: str) -> str:
    """A short name for a dataset choice (registry or demo-suite name, or the file/folder name)."""
    from lnfree_core.ui_data import demo_catalog

    for name, path in demo_catalog()["datasets"].items():
        if path == dataset:
            return name
    return Path(dataset).name if Path(dataset).exists() else dataset


def dataset_labels(datasets: Sequence[str]) -> dict[str, str]:
    """{dataset choice: short unique name} ('x', 'x (2)' when two files share a name)."""
    out: dict[str, str] = {}
    for d in datasets:
        base = label = dataset_label(d)
        k = 1
        while label in out.values():
            k += 1
            label = f"{base} ({k})"
        out[d] = label
    return out

@st.cache_resource(show_spinner=False)
def _gpt2_tokenizer():
    from lnfree_core.data import load_gpt2_tokenizer

    return load_gpt2_tokenizer()


def gpt2_decoder() -> Callable[[list[int]], str]:
    """decode(GPT-2 ids) -> text, with the GPT-2 tokenizer (offline: the bundled BPE files)."""
    tok = _gpt2_tokenizer()
    return lambda ids: tok.decode([int(i) for i in ids])


def gpt2_ids(model_spec: str | None = None, dataset: str | None = None) -> Callable[[Any], list[int]] | None:
    """A function mapping the token ids of `model_spec`'s (else `dataset`'s) compact vocabulary (the
    demo suite's) to GPT-2 ids, so pages show and decode GPT-2 ids; None when they are GPT-2 ids."""
    from lnfree_core.ui_data import gpt2_id_mapper

    return gpt2_id_mapper(model_spec, dataset)


def models_and_data(*, multi_data: bool = False, n_default: int = DEFAULT_N_SEQUENCES,
                    seq_len_default: int = DEFAULT_SEQ_LEN) -> tuple[list[str], list[str], int, int, str | None, dict]:
    """The top of every analysis page: model set, dataset(s), data size and computation settings."""
    with st.container(border=True):
        if multi_data:  # several datasets need the width: one row each
            specs = model_set_picker()
            datasets = analysis_dataset_picker(multi=True)
        else:
            c1, c2 = st.columns([3, 2])
            with c1:
                specs = model_set_picker()
            with c2:
                datasets = analysis_dataset_picker()
        n, seq_len, split = data_size_inputs(specs, n_default=n_default, seq_len_default=seq_len_default)
        settings = analysis_settings()
    return specs, datasets, n, seq_len, split, settings
