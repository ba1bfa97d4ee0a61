"""Widgets at the top of the analysis pages (Compare, Outliers, First tokens, Confidence neurons, DLA).

Session-state keys:
  analysis.models      the model set (specs), one picker shared by every analysis page
  analysis.datasets    the datasets of the Compare page; analysis.dataset: the one of the other pages
  analysis.n, analysis.seq_len, analysis.split   how many sequences of how many tokens
  analysis.cache_dir, analysis.device, analysis.batch_size   where results are cached, how they run
Query parameters: ?runs=a&runs=b (from the Runs page) puts those runs, and the base models they were
fine-tuned from, in the model set; ?dataset=NAME_OR_PATH picks the dataset.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import streamlit as st

from lnfree_core.analysis.cache import DEFAULT_CACHE_DIR  # the CLI's --cache-dir default: both share results
from lnfree_core.data import DatasetNotFoundError, list_datasets, resolve_dataset
from pages._common.ui_data import demo_suite
from pages._common.ui_data.demo_suite import built_demo_models
from pages._common.ui_data.model_specs import model_context, model_option_text, model_spec_problem, unique_labels
from pages._common.ui_data.runs import run_request

from .env import gpu_count, hub_reachable
from .pickers import _runs, model_picker
from .state import page_link, runs_root, seed, selected_runs


MODELS_KEY = "analysis.models"
# 64 sequences: at 8 the demo's CE moved by 0.13 nats between 8 and 16 sequences and the LN-free gaps of two
# datasets came out in the wrong order; 64 x 128 tokens takes about 25 s per model on 2 CPU cores for GPT-2
# Small and about a second for a demo model (the page shows the compute time).
DEFAULT_N_SEQUENCES, DEFAULT_SEQ_LEN = 64, 128
PAPER_MODELS = (  # the paper's models (appendix A), in Table 1 order
    "openai-community/gpt2", "schaeff/gpt2-small_vanilla300", "schaeff/gpt2-small_LNFree300",
    "openai-community/gpt2-medium", "schaeff/gpt2-medium_vanilla500", "schaeff/gpt2-medium_LNFree500",
    "openai-community/gpt2-large", "schaeff/gpt2-large_vanilla600", "schaeff/gpt2-large_LNFree600",
    "openai-community/gpt2-xl", "schaeff/gpt2-xl_vanilla800", "schaeff/gpt2-xl_LNFree800",
)


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


def _query_runs(root: Path) -> list[str]:
    return [str(root / n) for n in selected_runs() if (root / n).is_dir()] if st.query_params.get_all("runs") else []


def _base_models(run_dirs: Sequence[str]) -> list[str]:
    """The usable base models the runs were fine-tuned from (their request's `model`), deduplicated."""
    out: list[str] = []
    for rd in run_dirs:
        base = run_request(rd).get("model")
        if isinstance(base, str) and base and base not in out and model_spec_problem(base, hub_reachable()) is None:
            out.append(base)
    return out


def default_models() -> list[str]:
    """The model set a session starts with: the Runs page's selection (and the base models), else the
    paper's GPT-2 Small triple when the Hub answers, else the demo suite, else finished runs."""
    root = runs_root()
    picked = [str(root / n) for n in selected_runs() if (root / n / "checkpoints").is_dir()]
    if picked:
        return _base_models(picked) + picked
    if hub_reachable():
        return list(PAPER_MODELS[:3])
    demo = list(demo_suite.demo_catalog()["models"].values())
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
    options = list(dict.fromkeys([*current, *demo_suite.demo_catalog()["models"].values(), *runs, *PAPER_MODELS]))
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
    return unique_labels(specs)


def _dataset_options() -> tuple[list[str], dict[str, str]]:
    """(dataset options, {option: text}): the demo suite's datasets, the registry's, in that order."""
    texts = {path: f"demo: {name}" for name, path in demo_suite.demo_catalog()["datasets"].items()}
    texts.update({s.name: f"{s.name} (Hub)" for s in list_datasets()})
    return list(texts), texts


def default_datasets(multi: bool) -> list[str]:
    """?dataset=, else the demo suite's datasets when the Hub does not answer, else the paper's."""
    q = st.query_params.get_all("dataset")
    if q:
        return list(q)
    demo = list(demo_suite.demo_catalog()["datasets"].values())
    if demo and not hub_reachable():
        return demo if multi else demo[-1:]
    return ["owt", "pile", "pile-filtered"] if multi else ["pile-filtered"]


def _dataset_text(value: str, texts: dict[str, str]) -> str:
    return texts.get(value) or f"local: {Path(value).name or value}"


def _check_dataset(value: str) -> str | None:
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


def missing_inputs_hint(specs: Sequence[str], datasets: Sequence[str]) -> None:
    """What to do when a page has no model or no dataset to analyse: before the demo suite is built and
    with the Hub out of reach, point to the demo build (Home page or CLI) and to local folders and runs."""
    if specs and datasets:
        return
    offline_no_demo = not hub_reachable() and not built_demo_models()
    if offline_no_demo:
        st.info("Choose at least one model and a dataset above. None is offered yet: the Hugging Face Hub is not "
                "reachable and the offline demo suite is not built. Build it on the Home page (or `python -m lnfree_core demo build`, about 20 minutes on a "
                "CPU): it gives three models and three datasets that every analysis page opens on. Or add a local "
                "Hugging Face model folder or a run with \"Add a model\" above, and a local token file as the "
                "dataset.", icon=":material/info:")
        page_link("pages/home.py", label="Build the demo suite on Home", icon=":material/construction:")
    else:
        st.info("Choose at least one model and a dataset above.", icon=":material/info:")


def one_dataset_inputs(**kwargs: Any) -> tuple[list[str], dict[str, str], str, int, int, str | None, dict]:
    """models_and_data(**kwargs) for a page that analyses one dataset; the page stops with a hint until
    a model and a dataset are chosen. Returns (specs, {spec: label}, dataset, n, seq_len, split, settings)."""
    specs, datasets, n, seq_len, split, settings = models_and_data(**kwargs)
    if not specs or not datasets:
        missing_inputs_hint(specs, datasets)
        st.stop()
    return specs, model_labels(specs), datasets[0], n, seq_len, split, settings


def one_dataset_page(title: str, claim: str, demo_note: str | None = None,
                     **kwargs: Any) -> tuple[list[str], dict[str, str], str, int, int, str | None, dict]:
    """The head of an analysis page on one dataset: its title, the paper's claim as a caption, the inputs
    (one_dataset_inputs(**kwargs)), and `demo_note` (why the demo models do not show the effect) when a
    demo model is among them. Returns what one_dataset_inputs returns."""
    st.title(title)
    st.caption(claim)
    specs, labels, dataset, n, seq_len, split, settings = one_dataset_inputs(**kwargs)
    if demo_note and any(s.startswith("demo:") for s in specs):
        st.caption(demo_note)
    return specs, labels, dataset, n, seq_len, split, settings
