"""Home: what lnfree is, what is available here (Hub, models, datasets, GPUs) and the demo suite."""

from __future__ import annotations

import time

import pandas as pd
import streamlit as st
from huggingface_hub import try_to_load_from_cache

import jobs
from lnfree_core.data import list_datasets
from lnfree_core.method.presets import HUB_IDS, preset
from pages._common.env import gpu_count, hub_reachable, model_layers
from pages._common.state import page_link, page_setup, runs_root, show_error
from pages._common.ui_data.demo_suite import (
    DEMO_BUILD,
    built_demo_datasets,
    built_demo_models,
    demo_suite_state,
    demo_tables,
    start_demo_build,
)
from pages._common.ui_data.families import families_frame as common_families_frame, model_family
from pages._common.ui_data.runs import format_duration

page_setup()


def cached_on_disk(repo_id: str) -> bool:
    try:
        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    except Exception:
        return False


def models_frame(hub: bool, runs: list) -> pd.DataFrame:
    rows = []
    for name, hub_id in HUB_IDS.items():
        s = preset(name)
        where = "Hub" if hub else ("local Hub cache" if cached_on_disk(hub_id) else "not available (offline)")
        rows.append({"model": hub_id, "kind": "Hub", "family": model_family(hub_id), "layers": s.n_layers,
                     "paper schedule": f"{s.hparams.max_steps} steps", "available from": where})
    for spec in built_demo_models():
        rows.append({"model": spec, "kind": "demo suite", "layers": None, "paper schedule": "",
                     "available from": "demo suite (offline)"})
    for st_ in runs:
        if st_.state == "finished":
            rows.append({"model": st_.name, "kind": "finished run", "layers": model_layers(st_.run_dir),
                         "paper schedule": "", "available from": st_.run_dir})
    return pd.DataFrame(rows)


def datasets_frame(hub: bool) -> pd.DataFrame:
    rows = [
        {"dataset": s.name, "Hub id": s.hub_id, "what": s.description, "size": s.size,
         "available": "yes (streamed)" if hub else "no (Hub not reachable)"}
        for s in list_datasets()
    ]
    rows += [{"dataset": name, "Hub id": None, "what": "demo suite dataset (local)", "size": "",
              "available": f"yes: {path}"} for name, path in built_demo_datasets().items()]
    return pd.DataFrame(rows)


@st.fragment
def demo_section() -> None:
    state = demo_suite_state()
    if not state["available"]:
        st.info("Demo suite not available in this install.", icon=":material/info:")
        if state["error"]:
            st.caption(f"(importing it failed: {state['error']})")
        return
    if state["error"]:
        st.warning(f"Could not read the demo suite's state: {state['error']}")
    elif state["status"] is not None:
        status = state["status"]
        if isinstance(status, dict) and "models" in status:
            demo_status(status)
        elif isinstance(status, (dict, list)):
            st.json(status, expanded=1)
        elif hasattr(status, "to_dict"):
            st.json(status.to_dict(), expanded=1)
        else:
            st.write(status)
    st.caption("The demo suite is a small offline set of models and data (built locally, no Hub needed): "
               "`python -m lnfree_core demo build`.")
    if DEMO_BUILD.running:
        build_progress()
        return
    built = isinstance(state["status"], dict) and bool(state["status"].get("built"))
    label = "Rebuild the demo suite (finished stages are reused)" if built else "Build the demo suite"
    if st.button(label, icon=":material/construction:", key="home_demo_build"):
        try:
            start_demo_build()
        except (RuntimeError, OSError) as e:
            show_error(e, "Could not start the build: ")
        st.rerun()
    rc = DEMO_BUILD.returncode
    if rc is not None:
        if rc == 0:
            st.success("Last build finished.")
        elif rc < 0:
            st.warning("Last build was stopped; building again goes on from its finished stages.")
        else:
            st.error(f"Last build failed (exit code {rc}); see its log below.")
        with st.expander("Build log"):
            st.code(DEMO_BUILD.tail(60) or "(empty)", language=None)


def demo_status(status: dict) -> None:
    root = status.get("root", "")
    if status.get("built"):
        st.success(f"Built ({status.get('size') or 'unknown size'}) in `{root}`.", icon=":material/check:")
    else:
        st.info(f"Not built yet (it goes to `{root}`).", icon=":material/info:")
    tables = demo_tables(status)
    c1, c2 = st.columns(2)
    c1.dataframe(tables["models"], hide_index=True, width="stretch")
    c2.dataframe(tables["datasets"], hide_index=True, width="stretch")
    if "ce" in tables:
        st.markdown("**Mean cross-entropy (nats)** of each demo model on each demo dataset")
        st.dataframe(tables["ce"], hide_index=True, width="stretch")
        counts = (status.get("summary") or {}).get("sequences") or {}
        if counts:
            st.caption("Over the build's evaluation sets: " + ", ".join(f"{ds}: {k} sequences" for ds, k in counts.items())
                       + " (the held-out split, every sequence). The Compare page and `eval` evaluate the sample "
                       "you choose there, so their numbers differ by sampling; each says how many sequences and "
                       "tokens it used.")
    for line in ((status.get("summary") or {}).get("quality") or {}).get("statements", []):
        st.markdown(f"- {line}")
    with st.expander("Build stages"):
        st.dataframe(tables["stages"], hide_index=True, width="stretch")


_FIRST_SEEN: dict = {}  # build start time -> (when, overall fraction) first seen: the ETA's baseline


@st.fragment(run_every=1.0)
def build_progress() -> None:
    if not DEMO_BUILD.running:
        st.rerun()  # the build ended: redraw the section without the timer
    frac = DEMO_BUILD.progress()
    spent = time.time() - (DEMO_BUILD.started or time.time())
    elapsed = format_duration(spent)
    if frac is None:
        st.progress(0.0, text=f"Building the demo suite ({elapsed} so far)...")
    else:
        # ETA from the pace since this page first saw the build's overall fraction (the build prints it
        # weighted by each stage's cost; a rebuild starts above 0 % with its reused stages).
        first = _FIRST_SEEN.setdefault(DEMO_BUILD.started, (time.time(), frac))
        pace = (frac - first[1]) / max(time.time() - first[0], 1e-9)
        eta = f", about {format_duration((1 - frac) / pace)} left" if pace > 0 and frac < 1 else ""
        st.progress(frac, text=f"Building the demo suite: {frac:.0%} ({elapsed} so far{eta})")
    state = demo_suite_state()
    if isinstance(state.get("status"), dict) and "models" in state["status"]:
        st.dataframe(demo_tables(state["status"])["stages"], hide_index=True, width="stretch")
    st.code(DEMO_BUILD.tail(12) or "starting...", language=None)
    if st.button("Stop the build", icon=":material/stop_circle:", key="home_demo_stop",
                 help="Finished stages are kept; building again goes on from there."):
        DEMO_BUILD.stop()
        st.rerun()


st.title("lnfree")
st.markdown(
    "**Remove LayerNorm from GPT-2 (and Pythia, Llama, Qwen) by fine-tuning.** Each LayerNorm block is replaced by a *FakeLN* block "
    "that divides by a fixed scalar, the average standard deviation $\\bar\\sigma_{avg}$ tracked during "
    "fine-tuning, instead of each token's own standard deviation. Blocks are removed one at a time "
    "(first every LN_MLP, then LN_qk, LN_v and finally LN_f), with a few fine-tuning steps between removals so "
    "the loss recovers (Baroni et al. 2025, section 3 and appendix B). A *vanilla* run with the same data and "
    "learning-rate schedule but no removal is the control. The result is a GPT-2 with no LayerNorm "
    "non-linearity at inference, exported as a stock Hugging Face model."
)
st.markdown(
    "1. **Schedule**: pick the paper's schedule for a model size, or fit one to any model, and adjust it.\n"
    "2. **Train**: fine-tune with LN removal (and the vanilla control) on CPU or GPUs, watching loss and sigma live.\n"
    "3. **Runs**: every run with its status; resume, cancel, delete, compare."
)
links = st.columns(3)
for col, (path, label, icon) in zip(links, [("pages/schedule.py", "Design a schedule", ":material/timeline:"),
                                            ("pages/train.py", "Train a model", ":material/model_training:"),
                                            ("pages/runs.py", "See the runs", ":material/folder_open:")]):
    with col:
        page_link(path, label=label, icon=icon)

st.markdown(
    "**The paper's experiments** (Analysis pages, each also `python -m lnfree_core analyze ...` or `bench`): "
    "Compare (Table 1), Outliers (appendix E.1), DLA (5.1, appendix G), First tokens (5.3), Confidence "
    "neurons (appendix H), and\n"
    "- **IOI patching** (section 5.2, Fig. 2): activation vs attribution patching of the residual stream on "
    "IOI prompts, the error per site and the per-layer improvement score;\n"
    "- **Overconfidence** (sections 5.4, 6.1): mean entropy vs mean CE, reliability diagram and ECE, and "
    "entropy / CE after ablating the top confidence neurons;\n"
    "- **Benchmarks** (appendix F; appendix C for Pythia's HellaSwag): BoolQ, HellaSwag, PIQA and WinoGrande "
    "through lm-eval, with local task data when the Hub is out of reach."
)

st.header("This machine")
with st.spinner("Checking the Hugging Face Hub..."):
    hub = hub_reachable()
root = runs_root()
runs = jobs.list_runs(root)
gpus = gpu_count()
c = st.columns(3)
c[0].metric("Hugging Face Hub", "reachable" if hub else "not reachable")
c[1].metric("GPUs", gpus if gpus else "none (CPU)")
c[2].metric("Runs", len(runs), help=str(root))
if not hub:
    st.warning("The Hub is not reachable (or HF_HUB_OFFLINE is set): Hub models and datasets work only from the "
               "local cache. Use local folders, or build the demo suite below.", icon=":material/cloud_off:")

st.subheader("Models")
st.dataframe(models_frame(hub, runs), hide_index=True, width="stretch")
st.caption("Any local Hugging Face folder of a supported family (config.json + safetensors) and any run's checkpoint can be "
           "used too; pick them on the Train page.")
st.subheader("Datasets")
st.dataframe(datasets_frame(hub), hide_index=True, width="stretch")
st.caption("Local data: a .parquet/.jsonl/.txt file or a folder of them, with `input_ids` (token ids) or `text` rows.")
st.subheader("Model families")
st.dataframe(common_families_frame(), hide_index=True, width="stretch")
st.caption("GPT-2 and GPT-NeoX keep LayerNorm's FakeLN blocks; the RMSNorm families get FakeRMSNorm "
           "(x / sigma_bar * gamma). Every family but GPT-2 trains on token ids made with its own tokenizer "
           "(a local `input_ids` file): the listed datasets hold GPT-2 ids.")

st.header("Demo suite")
demo_section()
