"""Pickers of the Train and Runs pages: a run, a model to load (Hub id, folder, run, demo model) and a
dataset (registry, demo suite or local path).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import streamlit as st

import jobs
from lnfree_core.data import DatasetNotFoundError, list_datasets, resolve_dataset
from lnfree_core.method.presets import HUB_IDS
from pages._common.ui_data.demo_suite import built_demo_datasets, built_demo_models
from pages._common.ui_data.families import family_hub_examples, model_family

from .env import demo_available, hub_reachable, model_layers
from .state import PERSIST, runs_root, seed


DEMO_MODELS = ("original", "vanilla", "ln-free")
MODEL_KINDS = {"hub": "Hub id", "folder": "local folder", "run": "a run", "demo": "demo model"}


def _runs(root: Path, states: Sequence[str] | None = None) -> list[Any]:
    return [s for s in jobs.list_runs(root) if states is None or s.state in states]


def run_picker(key: str, *, label: str = "Run", states: Sequence[str] | None = None, multi: bool = False,
               root: Path | None = None, help: str | None = None) -> Any:
    """Pick run(s) under the runs root: a run name (or None), or a list of names when `multi`."""
    runs = _runs(root or runs_root(), states)
    names = [s.name for s in runs]
    by_name = {s.name: s for s in runs}

    def fmt(n: str) -> str:  # a live run's step changes every second: the label says only its state
        s = by_name.get(n)
        if s is None:
            return n
        return f"{n} ({s.state})" if s.active else f"{n} ({s.state}, step {s.step}/{s.max_steps or '?'})"

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
    if "demo" in kinds and not hub_reachable() and demo_available():
        if built_demo_models():  # offline: the demo models load; a Hub id would not
            seed(f"{key}.kind", "demo")
    kind = st.radio(label, list(kinds), key=f"{key}.kind", **PERSIST, format_func=MODEL_KINDS.get, horizontal=True)
    if kind == "hub":
        options = list(dict.fromkeys([*HUB_IDS.values(), *family_hub_examples()]))
        seed(f"{key}.hub", default_hub)
        spec = st.selectbox("Hub id", options, key=f"{key}.hub", **PERSIST, accept_new_options=True,
                            format_func=lambda h: f"{h} ({model_family(h) or 'family unknown'})",
                            help="The paper's models and examples of every supported family (GPT-2, GPT-NeoX/"
                                 "Pythia, Llama, Qwen2, Qwen3), or type any id of those families.")
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
        st.caption(", ".join([f"{n} layers" if n else "layer count unknown",
                              f"family: {model_family(str(p)) or 'unknown'}"]))
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
                            format_func=lambda n: f"{n} ({next(s.state for s in runs if s.name == n)}, "
                                                  f"{model_family(str(rroot / n)) or 'family unknown'})")
        return str(rroot / name) if name else None
    if kind == "demo":
        if not demo_available():
            st.info("Demo suite not available in this install.", icon=":material/info:")
            return None
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
    specs = {s.name: s for s in list_datasets()}
    demo = built_demo_datasets()
    # Offline, the demo-suite datasets come first (the Hub ones cannot stream).
    options = [*demo, *specs, "local"] if demo and not hub_reachable() else [*specs, *demo, "local"]
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
