"""Running the analyses behind one progress bar, and naming and decoding what they ran on (DataSpec,
dataset labels, GPT-2 token decoding).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import streamlit as st

from lnfree_core.analysis.cached import DataSpec
from lnfree_core.data import load_gpt2_tokenizer
from lnfree_core.model_tokenizer import model_decoder as make_model_decoder
from pages._common.ui_data import demo_suite
from pages._common.ui_data.analysis_frames import job_fraction
from pages._common.ui_data.model_specs import unique_names


def analysis_errors() -> tuple[type[BaseException], ...]:
    """What an analysis can fail with for a user's reason (missing model or data, offline Hub, a
    sequence longer than the model's context): shown as a message, the page goes on."""
    return (OSError, ValueError, RuntimeError, KeyError, IndexError, ImportError)


class JobProgress:
    """One progress bar over several analysis jobs, fed by the analyses' progress(done, total) callbacks."""

    def __init__(self, n_jobs: int):
        self.n_jobs = n_jobs
        self.slot = st.empty()

    def callback(self, job: int, label: str) -> Callable[[int, int], None]:
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
    t0 = time.perf_counter()
    for i, (key, label, fn) in enumerate(jobs):
        try:
            out[key] = fn(bar.callback(i, label))
        except analysis_errors() as e:
            failures.append((label, e))
    bar.clear()
    if jobs:
        st.caption(f"Computed {len(out)} of {len(jobs)} result(s) in {time.perf_counter() - t0:.1f} s "
                   "(results already in the cache take no time).")
    for label, e in failures:
        st.error(f"{label}: {type(e).__name__}: {e}", icon=":material/error:")
    return out


def model_dataset_jobs(specs: Sequence[str], datasets: Sequence[str], labels: dict[str, str],
                       ds_labels: dict[str, str], n: int, seq_len: int, split: str | None,
                       evaluate: Callable[..., Any]) -> list[tuple[Any, str, Callable]]:
    """run_jobs' jobs for every (model, dataset) pair: key (spec, dataset), label "model on dataset",
    running evaluate(spec, data_spec(dataset, n, seq_len, split), progress=progress)."""
    jobs = []
    for spec in specs:
        for ds in datasets:
            data = data_spec(ds, n, seq_len, split)
            jobs.append(((spec, ds), f"{labels[spec]} on {ds_labels[ds]}",
                         lambda progress, spec=spec, data=data: evaluate(spec, data, progress=progress)))
    return jobs


def data_spec(dataset: str, n: int, seq_len: int, split: str | None):
    """The analysis DataSpec of a dataset choice."""
    return DataSpec(dataset=dataset, split=split, n=n, seq_len=seq_len)


def run_options(settings: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments of the cached analysis entry points from analysis_settings():
    {'cache_dir', 'device', 'batch_size'}."""
    return {"cache_dir": settings["cache_dir"], "device": settings["device"], "batch_size": settings["batch_size"]}


def evaluate_models(evaluate: Callable[..., Any], specs: Sequence[str], labels: dict[str, str], data: Any,
                    settings: dict[str, Any], **options: Any) -> dict[str, Any]:
    """run_jobs() of one cached analysis entry point (lnfree_core.analysis.cached: ce_eval, dla_eval, ...)
    per model on `data` (a DataSpec), with the computation `settings` of analysis_settings() and the
    analysis' own `options`: {spec: result} of the models that did not fail."""
    kw = {**run_options(settings), **options}
    where = dataset_label(data.dataset)
    return run_jobs([(s, f"{labels[s]} on {where}", lambda progress, s=s: evaluate(s, data, progress=progress, **kw))
                     for s in specs])


def dataset_label(dataset: str) -> str:
    """A short name for a dataset choice (registry or demo-suite name, or the file/folder name)."""
    for name, path in demo_suite.demo_catalog()["datasets"].items():
        if path == dataset:
            return name
    return Path(dataset).name if Path(dataset).exists() else dataset


def dataset_labels(datasets: Sequence[str]) -> dict[str, str]:
    """{dataset choice: short unique name} ('x', 'x (2)' when two files share a name)."""
    return unique_names(datasets, dataset_label)


@st.cache_resource(show_spinner=False)
def _gpt2_tokenizer():
    return load_gpt2_tokenizer()


def gpt2_decoder() -> Callable[[list[int]], str]:
    """decode(GPT-2 ids) -> text, with the GPT-2 tokenizer (offline: the bundled BPE files)."""
    tok = _gpt2_tokenizer()
    return lambda ids: tok.decode([int(i) for i in ids])


@st.cache_resource(show_spinner=False)
def model_decoder(model_spec: str) -> Callable[[list[int]], str]:
    """decode(ids) -> text with the tokenizer of the model's family (GPT-2's for GPT-2 models; the
    model's own, found locally, for Pythia/Llama/Qwen; '<id>' tokens when it has none here)."""
    return make_model_decoder(model_spec)


def gpt2_ids(model_spec: str | None = None, dataset: str | None = None) -> Callable[[Any], list[int]] | None:
    """A function mapping the token ids of `model_spec`'s (else `dataset`'s) compact vocabulary (the
    demo suite's) to GPT-2 ids, so pages show and decode GPT-2 ids; None when they are GPT-2 ids."""
    return demo_suite.gpt2_id_mapper(model_spec, dataset)
