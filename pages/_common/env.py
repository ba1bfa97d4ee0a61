"""What this machine and install offer (cached briefly): demo models, GPUs, the Hugging Face Hub, and
a model's layer count read without loading it.
"""

from __future__ import annotations

import json
from pathlib import Path

import streamlit as st
import torch

from lnfree_core.data import hub_reachable as probe_hub
from lnfree_core.demo.paths import demo_model_path
from lnfree_core.method.presets import HUB_IDS, preset
from pages._common.ui_data import demo_suite
from pages._common.ui_data.model_specs import model_context as read_model_context


def demo_available() -> bool:
    """Whether this install can load demo-suite models (`demo:NAME`)."""
    return demo_suite.demo_models_available()


@st.cache_data(ttl=60, show_spinner=False)
def gpu_count() -> int:
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


@st.cache_data(ttl=30, show_spinner=False)
def hub_reachable() -> bool:
    return probe_hub()


def model_layers(spec: str) -> int | None:
    """The layer count of a model spec when it is known without loading weights (else None)."""
    for name, hub_id in HUB_IDS.items():
        if spec in (name, hub_id):
            return preset(name).n_layers
    path = Path(spec.partition("@")[0])
    if spec.startswith("demo:"):
        try:
            path = demo_model_path(spec.split(":", 1)[1])
        except (FileNotFoundError, ValueError):
            return None
    for cfg in (path / "config.json", *sorted((path / "checkpoints").glob("step_*/config.json"))[-1:]):
        try:
            data = json.loads(cfg.read_text())
        except (OSError, ValueError):
            continue
        for key in ("n_layer", "num_hidden_layers"):
            if isinstance(data.get(key), int):
                return data[key]
    return None


def model_context(spec: str | None) -> int | None:
    """How many positions a model spec takes (config n_positions), known without loading weights;
    None when unknown (pages._common.ui_data.model_context)."""
    if not spec:
        return None
    return read_model_context(spec)
