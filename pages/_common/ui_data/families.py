"""The model families lnfree supports, what the paper did with each, and which family a model spec is.

`FAMILY_TABLE` is the one place the app (Home) and the README's table take their rows from; the
adapters themselves live in lnfree_core.method.adapters.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from huggingface_hub import try_to_load_from_cache

from lnfree_core.data.model_fit import check_tokenizer_fit
from lnfree_core.model_tokenizer import config_model_type

# model_type, family, normalisation, example Hub ids, paper status, verified here
FAMILY_TABLE: list[dict] = [
    {"model_type": "gpt2", "family": "GPT-2", "norm": "LayerNorm",
     "examples": ["openai-community/gpt2", "openai-community/gpt2-medium", "openai-community/gpt2-large",
                  "openai-community/gpt2-xl"],
     "paper": "main results (Small to XL, Tables 1-4)",
     "verified": "paper schedules; surgery, export, Hub LN-free files, every analysis"},
    {"model_type": "gpt_neox", "family": "GPT-NeoX (Pythia)", "norm": "LayerNorm, parallel residual",
     "examples": ["EleutherAI/pythia-70m", "EleutherAI/pythia-160m", "EleutherAI/pythia-410m",
                  "EleutherAI/pythia-1.4b"],
     "paper": "Pythia-70M in appendix C (CE 3.80 vanilla vs 3.89 LN-free); schedule not given",
     "verified": "tiny random-init models: surgery, independent forward, 40-step run, exact export, analyses"},
    {"model_type": "llama", "family": "Llama (SmolLM2, Llama-3.2)", "norm": "RMSNorm (FakeRMSNorm)",
     "examples": ["HuggingFaceTB/SmolLM2-135M", "HuggingFaceTB/SmolLM2-360M", "meta-llama/Llama-3.2-1B"],
     "paper": "not in the paper (appendix D argues RMSNorm carries over)",
     "verified": "tiny random-init models: surgery, independent forward, 40-step run, exact export, analyses"},
    {"model_type": "qwen2", "family": "Qwen2 / Qwen2.5", "norm": "RMSNorm (FakeRMSNorm)",
     "examples": ["Qwen/Qwen2.5-0.5B"],
     "paper": "not in the paper",
     "verified": "tiny random-init models: surgery, independent forward, 40-step run, exact export, analyses"},
    {"model_type": "qwen3", "family": "Qwen3", "norm": "RMSNorm + per-head q/k RMSNorm",
     "examples": ["Qwen/Qwen3-0.6B"],
     "paper": "not in the paper (the authors' attempt was not released)",
     "verified": "tiny random-init models: as Llama, q_norm/k_norm frozen with LN_qk"},
]

_BY_TYPE = {row["model_type"]: row for row in FAMILY_TABLE}


def family_hub_examples() -> list[str]:
    """Example Hub ids of every supported family, GPT-2 first."""
    return [hid for row in FAMILY_TABLE for hid in row["examples"]]


def families_frame():
    """FAMILY_TABLE as a frame for the Home page."""
    return pd.DataFrame([{"family": r["family"], "normalisation": r["norm"], "in the paper": r["paper"],
                          "verified in lnfree": r["verified"], "examples": ", ".join(r["examples"])}
                         for r in FAMILY_TABLE])


def _config_path(spec: str) -> Path | None:
    if spec.startswith("demo:"):
        return None
    path_s, _, step = spec.partition("@")
    path = Path(path_s).expanduser()
    if (path / "checkpoints").is_dir():
        ckpts = sorted((path / "checkpoints").glob("step_*/config.json"))
        if step.isdigit():
            return path / "checkpoints" / f"step_{int(step):08d}" / "config.json"
        return ckpts[-1] if ckpts else None
    if (path / "config.json").is_file():
        return path / "config.json"
    if path.exists():
        return None
    try:  # a Hub id: only its locally cached config is read (nothing is downloaded)
        found = try_to_load_from_cache(spec, "config.json")
        return Path(found) if isinstance(found, str) else None
    except Exception:
        return None


def model_family(spec: str | None) -> str | None:
    """The family of a model spec ("GPT-2", "GPT-NeoX (Pythia)", ...) read from its config.json without
    loading weights; demo models are GPT-2; "unsupported (<type>)" for an unknown model_type; None when
    the config cannot be read (a Hub id not in the cache)."""
    if not spec:
        return None
    if spec.startswith("demo:"):
        return _BY_TYPE["gpt2"]["family"]
    cfg = _config_path(spec)
    if cfg is None:
        for row in FAMILY_TABLE:  # a known example id
            if spec in row["examples"]:
                return row["family"]
        return None
    try:
        model_type = json.loads(cfg.read_text()).get("model_type")
    except (OSError, ValueError):
        return None
    row = _BY_TYPE.get(model_type)
    return row["family"] if row else f"unsupported ({model_type})"


def data_fit_problem(model_spec: str | None, dataset: str | None) -> str | None:
    """Why `dataset` cannot train `model_spec` (GPT-2 token ids for a model with another tokenizer), or
    None; the trainer and the analyses refuse the same (lnfree_core.data.model_fit)."""
    if not model_spec or not dataset:
        return None
    cfg = _config_path(model_spec) if not model_spec.startswith("demo:") else None
    model_type = config_model_type(cfg)
    if model_type is None:
        model_type = next((r["model_type"] for r in FAMILY_TABLE if model_spec in r["examples"]), None)
    if model_type in (None, "gpt2") or model_type not in _BY_TYPE:
        return None
    try:
        check_tokenizer_fit(model_type, dataset)
    except ValueError as e:
        return str(e)
    return None
