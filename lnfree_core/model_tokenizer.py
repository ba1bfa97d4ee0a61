"""The tokenizer that reads a model's token ids, for every supported family (decoding in analyses).

GPT-2-family models (and the demo suite, whose compact ids map to GPT-2's) use GPT-2's tokenizer,
bundled for offline use. Other families use their own: the one saved in the model folder (an lnfree
export copies it), else the one of the base model a run was trained from, looked up locally only (a
folder or the Hugging Face cache; nothing is downloaded). When none is found, tokens are shown as ids.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import yaml
from huggingface_hub import try_to_load_from_cache
from transformers import AutoTokenizer

from .data.tokenizer import is_gpt2_name, load_gpt2_tokenizer
from .models import resolve_checkpoint


def _model_type_and_sources(spec: str) -> tuple[str | None, list[str]]:
    """(config.json model_type or None, where a tokenizer may be found) without loading weights."""
    if spec.startswith("demo:"):
        return "gpt2", []

    try:
        ckpt = resolve_checkpoint(spec)
    except (FileNotFoundError, ValueError):
        ckpt = None
    sources: list[str] = []
    cfg_path = None
    if ckpt is not None:
        cfg_path = ckpt / "config.json"
        run_cfg = ckpt.parent.parent / "config.yaml"
        if run_cfg.exists():
            base = (yaml.safe_load(run_cfg.read_text()) or {}).get("model")
            if base:
                sources.append(str(base))
    elif (Path(spec) / "config.json").is_file():
        cfg_path = Path(spec) / "config.json"
        sources.append(spec)
    else:
        sources.append(spec)  # a Hub id: only its cached files are used
        try:
            found = try_to_load_from_cache(spec, "config.json")
            cfg_path = Path(found) if isinstance(found, str) else None
        except Exception:
            cfg_path = None
    return config_model_type(cfg_path), sources


def config_model_type(cfg_path: Path | None) -> str | None:
    """The `model_type` of a config.json, or None (no path, an unreadable file, no such key)."""
    if cfg_path is None:
        return None
    try:
        return json.loads(cfg_path.read_text()).get("model_type")
    except (OSError, ValueError):
        return None


def model_tokenizer(spec: str):
    """The tokenizer of model `spec`, or None when the family's tokenizer is not available locally."""
    model_type, sources = _model_type_and_sources(spec)
    if model_type == "gpt2" or (model_type is None and is_gpt2_name(spec)):
        return load_gpt2_tokenizer()

    for src in sources:
        if src.startswith("demo:"):
            return load_gpt2_tokenizer()
        try:
            return AutoTokenizer.from_pretrained(src, local_files_only=True)
        except (OSError, ValueError, TypeError, KeyError):
            continue
    if model_type is None and not sources:
        return load_gpt2_tokenizer()
    return None


def ids_as_text(ids: list[int]) -> str:
    """Token ids shown as '<id>' (when no tokenizer for the model is available)."""
    return "".join(f"<{int(i)}>" for i in ids)


def model_decoder(spec: str) -> Callable[[list[int]], str]:
    """decode(ids) -> text with the model's tokenizer, or ids_as_text when it has none here."""
    tok = model_tokenizer(spec)
    if tok is None:
        return ids_as_text
    return lambda ids: tok.decode([int(i) for i in ids])
