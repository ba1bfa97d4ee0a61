"""Compact vocabularies: models and datasets whose token ids index a subset of GPT-2's vocabulary.

The demo suite trains small models on a vocabulary restricted to the GPT-2 tokens its corpora use
(the LM head over all 50,257 tokens would dominate the cost on a CPU). Such a model or dataset
stores its ids in the compact vocabulary and carries ``vocab_map.json`` beside its files: a JSON
list whose entry ``c`` is the GPT-2 id of compact id ``c``. Everything that shows text (analyses,
the app) maps ids back with :func:`to_gpt2_ids` or decodes them with :func:`decode_tokens`; models
and datasets without a map use GPT-2 ids directly (``load_vocab_map`` returns None).

:func:`load_vocab_map` finds the map of a dataset folder or file, a model folder (also an lnfree
export), a checkpoint, a run directory (its own map, else its base model's, else its dataset's),
or a demo model spec (``demo:ln-free``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable

import numpy as np
import yaml

from lnfree_core.data.tokenizer import VOCAB_SIZE
from lnfree_core.names import is_scheme_spec, resolve_model_name

VOCAB_MAP_FILE = "vocab_map.json"
_MAX_HOPS = 4  # run -> base model -> run -> ...: a bound against cycles


def _validate(vmap: np.ndarray, where: str) -> np.ndarray:
    if vmap.ndim != 1 or len(vmap) == 0:
        raise ValueError(f"{where}: a vocabulary map is a non-empty list of GPT-2 ids")
    if vmap.min() < 0 or vmap.max() >= VOCAB_SIZE:
        raise ValueError(f"{where}: GPT-2 ids must lie in [0, {VOCAB_SIZE})")
    if len(np.unique(vmap)) != len(vmap):
        raise ValueError(f"{where}: a GPT-2 id appears twice in the vocabulary map")
    return vmap


def save_vocab_map(folder: str | os.PathLike, vmap: Iterable[int]) -> Path:
    """Write ``vmap`` (compact id -> GPT-2 id) as ``folder/vocab_map.json``; returns the file."""
    arr = _validate(np.asarray(list(vmap), dtype=np.int64), str(folder))
    path = Path(folder) / VOCAB_MAP_FILE
    tmp = path.with_name(f".{VOCAB_MAP_FILE}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps([int(i) for i in arr]) + "\n")
    os.replace(tmp, path)
    return path


def _read(path: Path) -> np.ndarray:
    data = json.loads(path.read_text())
    if not isinstance(data, list) or not all(isinstance(i, int) for i in data):
        raise ValueError(f"{path}: expected a JSON list of integers (compact id -> GPT-2 id)")
    return _validate(np.asarray(data, dtype=np.int64), str(path))


def _yaml_field(path: Path, key: str) -> str | None:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError):
        return None
    val = data.get(key) if isinstance(data, dict) else None
    return val if isinstance(val, str) else None


def _json_field(path: Path, key: str) -> str | None:
    try:
        val = json.loads(path.read_text()).get(key)
    except (OSError, ValueError, AttributeError):
        return None
    return val if isinstance(val, str) else None


def _find(spec: str, hops: int) -> np.ndarray | None:
    if hops > _MAX_HOPS:
        return None
    if is_scheme_spec(spec):
        try:
            return _find(str(resolve_model_name(spec)), hops + 1)
        except (FileNotFoundError, ValueError):
            return None
    path = Path(spec.split("@", 1)[0] if not Path(spec).exists() else spec)
    if path.is_file():
        if path.name == VOCAB_MAP_FILE:
            return _read(path)
        path = path.parent  # a data file: its folder's map
    if not path.is_dir():
        return None  # a Hub id: GPT-2 ids
    if (path / VOCAB_MAP_FILE).is_file():
        return _read(path / VOCAB_MAP_FILE)
    if (path / "fakeln.json").is_file() and path.parent.name == "checkpoints":
        return _find(str(path.parent.parent), hops + 1)  # a checkpoint: its run
    if (path / "config.yaml").is_file():  # a run directory: its base model, else its dataset
        for key in ("model", "dataset"):
            ref = _yaml_field(path / "config.yaml", key)
            if ref:
                found = _find(ref, hops + 1)
                if found is not None:
                    return found
    if (path / "lnfree_export.json").is_file():  # an export without its own map: its source
        src = _json_field(path / "lnfree_export.json", "source")
        if src:
            return _find(src, hops + 1)
    return None


def load_vocab_map(path: str | os.PathLike) -> np.ndarray | None:
    """The compact -> GPT-2 id map of a dataset, model, checkpoint, run or ``demo:NAME``; None if it has none.

    ``path`` may also name ``vocab_map.json`` itself or a data file in a dataset folder. A run
    directory without its own map uses its base model's (config.yaml ``model``), else its dataset's.
    Returns an int64 array (entry c = GPT-2 id of compact id c).
    """
    return _find(os.fspath(path), 0)


def to_gpt2_ids(ids, vmap: np.ndarray | None) -> np.ndarray:
    """Compact ids (any shape; numpy, torch or lists) as GPT-2 ids; unchanged when ``vmap`` is None."""
    arr = np.asarray(ids.cpu() if hasattr(ids, "cpu") else ids, dtype=np.int64)
    if vmap is None:
        return arr
    if arr.size and (arr.min() < 0 or arr.max() >= len(vmap)):
        raise ValueError(f"token ids outside the compact vocabulary [0, {len(vmap)})")
    return np.asarray(vmap)[arr]


def from_gpt2_ids(ids, vmap: np.ndarray | None) -> np.ndarray:
    """GPT-2 ids as compact ids (inverse of :func:`to_gpt2_ids`); ValueError for ids outside the map."""
    arr = np.asarray(ids, dtype=np.int64)
    if vmap is None:
        return arr
    inverse = np.full(VOCAB_SIZE, -1, dtype=np.int64)
    inverse[np.asarray(vmap)] = np.arange(len(vmap))
    out = inverse[arr]
    if out.size and out.min() < 0:
        missing = sorted(set(arr[out < 0].ravel().tolist()))[:8]
        raise ValueError(f"GPT-2 ids {missing} are not in the compact vocabulary")
    return out


def decode_tokens(ids, tokenizer, vmap: np.ndarray | None = None) -> list[str]:
    """Each token of a 1-d sequence decoded on its own (``' the'``, ``'\\t'``), compact ids mapped first."""
    gpt2 = to_gpt2_ids(ids, vmap).ravel()
    return [tokenizer.decode([int(i)]) for i in gpt2]
