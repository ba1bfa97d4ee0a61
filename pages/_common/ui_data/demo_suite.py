"""The offline demo suite as the pages see it: whether this install has one, its status, what a built
suite offers (models, datasets), its build command running in the background, its status tables,
and the mapping of its compact vocabulary to GPT-2 ids.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from lnfree_core.data.vocab_map import load_vocab_map, to_gpt2_ids

from .background import BackgroundCommand, python_command


DEMO_BUILD = BackgroundCommand(Path(os.environ.get("TMPDIR", "/tmp")) / f"lnfree-demo-build-{os.getuid()}.log")
DEMO_CLI_MODULE = "lnfree_core.cli.demo"  # `python -m lnfree_core demo build|status`
DEMO_MODULE = "lnfree_core.demo"


def start_demo_build() -> None:
    """Start `python -m lnfree_core demo build` in the background (DEMO_BUILD: one build at a time)."""
    DEMO_BUILD.start(python_command("demo", "build"))


def _has_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def demo_models_available() -> bool:
    """Whether `demo:NAME` model specs can be resolved in this install (lnfree_core.demo.paths)."""
    return _has_module(DEMO_MODULE) and _has_module(DEMO_MODULE + ".paths")


def demo_suite_state() -> dict[str, Any]:
    """{'available': bool, 'status': what lnfree_core.demo.status() returns (or None), 'error': str|None}.

    'available' is False when this install has no demo suite command (lnfree_core.cli.demo, which
    `python -m lnfree_core demo build` runs).
    """
    if not _has_module(DEMO_CLI_MODULE):
        return {"available": False, "status": None, "error": None}
    try:
        mod = importlib.import_module(DEMO_MODULE)
    except Exception as e:  # a broken install must not break the page
        return {"available": True, "status": None, "error": f"{type(e).__name__}: {e}"}
    fn = getattr(mod, "status", None)
    if not callable(fn):
        return {"available": True, "status": None, "error": None}
    try:
        return {"available": True, "status": fn(), "error": None}
    except Exception as e:
        return {"available": True, "status": None, "error": f"{type(e).__name__}: {e}"}


def demo_catalog(root: str | os.PathLike | None = None) -> dict[str, dict[str, str]]:
    """What a *built* demo suite offers (lnfree_core.demo.paths; root: its default, ./lnfree_home/demo):
    {'models': {name: 'demo:name'}, 'datasets': {name: folder}}; both empty when this install has no
    demo suite or it is not built."""
    out: dict[str, dict[str, str]] = {"models": {}, "datasets": {}}
    try:
        if importlib.util.find_spec("lnfree_core.demo") is None or \
                importlib.util.find_spec("lnfree_core.demo.paths") is None:
            return out
        paths = importlib.import_module("lnfree_core.demo.paths")
        for name in paths.MODEL_NAMES:
            try:
                paths.demo_model_path(name, root)  # raises FileNotFoundError until it is built
            except FileNotFoundError:
                continue
            out["models"][name] = f"demo:{name}"
        for name in paths.DATASET_NAMES:
            try:
                out["datasets"][name] = str(paths.demo_dataset_path(name, root, must_exist=True))
            except FileNotFoundError:
                continue
    except Exception:  # a broken or half-written install must not break a page
        return {"models": {}, "datasets": {}}
    return out


def built_demo_models() -> list[str]:
    """`demo:NAME` specs of the demo-suite models that are built ([] without a demo suite)."""
    return list(demo_catalog()["models"].values())


def built_demo_datasets() -> dict[str, str]:
    """{name: folder} of the demo-suite datasets that are built ({} without a demo suite)."""
    return dict(demo_catalog()["datasets"])


def demo_tables(status: Mapping[str, Any]) -> dict[str, pd.DataFrame]:
    """Tables of a demo_status() dict: 'models', 'datasets', 'stages' and (once built) 'ce' (nats)."""
    models = pd.DataFrame([
        {"model": m.get("spec", f"demo:{n}"), "built": bool(m.get("built")),
         "LN-free": {None: "", True: "yes", False: "no"}.get(m.get("ln_free"), ""), "folder": m.get("path", "")}
        for n, m in (status.get("models") or {}).items()
    ], columns=["model", "built", "LN-free", "folder"])
    datasets = pd.DataFrame([
        {"dataset": n, "built": bool(d.get("built")), "folder": d.get("path", "")}
        for n, d in (status.get("datasets") or {}).items()
    ], columns=["dataset", "built", "folder"])
    stages = pd.DataFrame([
        {"stage": n, "finished": bool(s.get("finished")), "seconds": s.get("seconds")}
        for n, s in (status.get("stages") or {}).items()
    ], columns=["stage", "finished", "seconds"])
    out = {"models": models, "datasets": datasets, "stages": stages}
    ce = (status.get("summary") or {}).get("ce")
    if isinstance(ce, dict) and ce:
        out["ce"] = pd.DataFrame(ce).T.rename_axis("model").reset_index()
    return out


def gpt2_id_mapper(model_spec: str | None, dataset: str | None = None) -> Callable[[list[int]], list[int]] | None:
    """For a model (else a dataset) that uses a compact vocabulary (the demo suite's): a function mapping
    its token ids to GPT-2 ids (lnfree_core.data.vocab_map), for display; None when ids are GPT-2 ids."""
    vmap = None
    for ref in (model_spec, dataset):
        if ref and vmap is None:
            try:
                vmap = load_vocab_map(ref)
            except (OSError, ValueError):
                vmap = None
    if vmap is None:
        return None
    return lambda ids: [int(i) for i in to_gpt2_ids(list(ids), vmap)]
