"""Model specs (Hub id, folder, run, checkpoint, `demo:NAME`) as the pickers show them: their kind,
short labels, context length and why one cannot be loaded -- all without loading a model.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Hashable, Sequence
from pathlib import Path
from typing import Any

from huggingface_hub import try_to_load_from_cache

from lnfree_core.checkpoint import latest_checkpoint
from lnfree_core.demo.paths import demo_model_path

from . import demo_suite  # demo_catalog looked up at call time (the tests replace it there)


def model_kind(spec: str) -> str:
    """'demo', 'run', 'checkpoint', 'folder' or 'hub': where a model spec points (nothing is loaded)."""
    if spec.startswith("demo:"):
        return "demo"
    path = Path(spec.partition("@")[0])
    if (path / "checkpoints").is_dir():
        return "run"
    if (path / "fakeln.json").is_file():
        return "checkpoint"
    if path.exists() or (os.sep in spec and not re.fullmatch(r"[\w.-]+/[\w.-]+", spec)):
        return "folder"
    return "hub"


def model_label(spec: str) -> str:
    """A short name for a model spec: 'demo ln-free', a run's or folder's name ('name@120' for a
    step), or the Hub id itself."""
    kind = model_kind(spec)
    if kind == "demo":
        return f"demo {spec.split(':', 1)[1]}"
    if kind == "hub":
        return spec
    path_s, at, step = spec.partition("@")
    path = Path(path_s)
    name = path.name
    if kind == "checkpoint" and path.parent.name == "checkpoints" and path.name.startswith("step_"):
        name = f"{path.parent.parent.name}@{int(path.name.split('_')[-1])}"  # RUN/checkpoints/step_N
    return f"{name}@{step}" if at else name


def unique_names(items: Sequence[Hashable], name: Callable[[Any], str]) -> dict[Any, str]:
    """{item: name(item)} with names made unique ('x', 'x (2)', ...) in the order given."""
    out: dict[Any, str] = {}
    for item in items:
        base = label = name(item)
        k = 1
        while label in out.values():
            k += 1
            label = f"{base} ({k})"
        out[item] = label
    return out


def unique_labels(specs: Sequence[str]) -> dict[str, str]:
    """{spec: label} with labels made unique ('x', 'x (2)', ...) in the order given."""
    return unique_names(specs, model_label)


def model_context(spec: str) -> int | None:
    """A model's context length (config.json n_positions / max_position_embeddings) when it can be read
    without loading weights: a folder, a run (newest checkpoint), a checkpoint, a built demo model, a
    Hub id in the local cache or one of the paper's; None otherwise."""
    kind = model_kind(spec)
    cfgs: list[Path] = []
    if kind == "demo":
        try:
            return model_context(str(demo_model_path(spec.split(":", 1)[1])))
        except Exception:  # no demo suite, or not built
            return None
    if kind == "hub":
        if re.fullmatch(r"(openai-community/)?gpt2(-medium|-large|-xl)?|schaeff/gpt2-\w+", spec):
            return 1024
        try:
            found = try_to_load_from_cache(spec, "config.json")
            cfgs = [Path(found)] if isinstance(found, str) else []
        except Exception:
            cfgs = []
    else:
        path_s, _, step = spec.partition("@")
        path = Path(path_s)
        if kind == "run":
            ckpts = sorted((path / "checkpoints").glob("step_*/config.json"))
            cfgs = [path / "checkpoints" / f"step_{int(step):08d}" / "config.json"] if step.isdigit() else ckpts[-1:]
        else:
            cfgs = [path / "config.json"]
    for cfg in cfgs:
        try:
            data = json.loads(cfg.read_text())
        except (OSError, ValueError):
            continue
        for key in ("n_positions", "max_position_embeddings", "n_ctx"):
            if isinstance(data.get(key), int):
                return data[key]
    return None


def model_option_text(spec: str) -> str:
    """How a model spec reads in a picker: 'demo: ln-free', 'run: name', 'folder: name', 'Hub: id'."""
    kind = model_kind(spec)
    prefix = {"demo": "demo", "run": "run", "checkpoint": "checkpoint", "folder": "folder", "hub": "Hub"}[kind]
    name = spec.split(":", 1)[1] if kind == "demo" else model_label(spec)
    return f"{prefix}: {name}"


def model_spec_problem(spec: str, hub_ok: bool) -> str | None:
    """Why a model spec cannot be loaded as it stands (None when it looks usable); nothing is loaded."""
    kind = model_kind(spec)
    if kind == "demo":
        return None if spec.split(":", 1)[1] in demo_suite.demo_catalog()["models"] else \
            f"`{spec}`: the demo suite is not built here (Home page: Build the demo suite)."
    if kind == "hub":
        if hub_ok:
            return None
        try:
            cached = isinstance(try_to_load_from_cache(spec, "config.json"), str)
        except Exception:  # a malformed id, or no cache
            cached = False
        return None if cached else f"`{spec}`: not in the local Hugging Face cache and the Hub is not reachable."
    path_s, _, step = spec.partition("@")
    path = Path(path_s)
    if not path.exists():
        return f"`{path}` does not exist."
    if kind == "run":
        if step:
            ok = (path / "checkpoints" / f"step_{int(step) if step.isdigit() else -1:08d}").is_dir()
            return None if ok else f"run `{path.name}` has no checkpoint for step {step}."
        return None if latest_checkpoint(path) is not None else f"run `{path.name}` has no checkpoint yet."
    if kind == "folder":
        if not (path / "config.json").is_file():
            return f"`{path}` is not a Hugging Face model folder (no config.json)."
        if not any(path.glob("*.safetensors")):
            return f"`{path}` has no .safetensors weights."
    return None
