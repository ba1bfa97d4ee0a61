"""The demo's shipped original: a GPT-2 pretrained longer than a build can afford, by lnfree's own trainer.

Why it is shipped (issue 13): the paper's findings in the original model (attention sinks, a first-token
residual norm far above the other positions', confidence neurons whose ablation moves entropy much more
than CE) need far more optimisation than a 10-minute, 2-core build gives. Measured with the ``full``
recipe (:mod:`.sizes`): at 300 pretraining steps none of them is there (sink rate 2.2%, which is what
uniform attention over the first two queries alone gives), and they appear only after thousands of
steps. So the project ships that longer-pretrained ``original`` (``original/model.safetensors``, float32)
with its recipe, and ``demo build`` only fine-tunes it.

Files in ``lnfree_core/demo/original/``::

    config.json         the GPT-2 config (compact vocabulary)
    model.safetensors   its weights (read with safetensors: no pickle)
    vocab_map.json      compact id -> GPT-2 id (the vocabulary of the data it was trained on)
    recipe.json         how it was made and on what: the DemoSize settings that shape it (model, data,
                        pretraining), the training numbers, the SHA-256 of the weights file and of the
                        data it was trained on (:func:`data_fingerprint`), the versions, and the command
                        that rebuilds it

Rebuild (on 2 cores about an hour)::

    python -m lnfree_core demo pretrain-original --out lnfree_core/demo/original

It makes the demo datasets and the seeded initial model in a work folder, then pretrains with
:func:`lnfree_core.train.train` (vanilla mode, the recipe's schedule), exactly as a build's ``pretrain``
stage does with ``original="pretrain"``. The same recipe on another machine gives an equivalent model,
not a bit-identical one (float reductions depend on the CPU and thread count).

A build uses the shipped model only when the data it would fine-tune on is the data the model was
trained on: the demo corpora come from the running Python's standard library, so another Python version
can give other token rows and another compact vocabulary. Then (:func:`shipped_status` says why) the
build pretrains the recipe itself, with a warning that this takes about an hour.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import sys
import warnings
from pathlib import Path

import numpy as np
import torch
import transformers

from lnfree_core.data.vocab_map import load_vocab_map, save_vocab_map

from .paths import demo_dataset_path, demo_model_path, demo_root, demo_run_path
from .sizes import DemoSize
from .tokens import read_rows

SHIPPED_DIR = Path(__file__).resolve().parent / "original"
RECIPE_FILE = "recipe.json"
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
REBUILD_COMMAND = "python -m lnfree_core demo pretrain-original --out lnfree_core/demo/original"
# The DemoSize fields that decide the pretrained weights: the data (corpora, packing, IOI text), the
# model's shape and initialisation, and the pretraining. A shipped model serves a size whose values of
# these fields equal the recipe's.
RECIPE_FIELDS = ("prose_chars", "val_every", "pile_rows", "seq_len", "row_start_eot", "ioi_sentences", "repeat_spans",
                 "n_layer", "n_embd", "n_head", "tie_embeddings", "seed",
                 "pretrain_steps", "pretrain_lr", "pretrain_min_lr", "pretrain_warmup", "pretrain_weight_decay",
                 "batch_size")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def data_fingerprint(root: str | os.PathLike) -> dict:
    """SHA-256 of the token rows the original trains on and of the compact vocabulary, under demo ``root``.

    Hashes the values, not the files: ``owt-demo``'s train rows as little-endian int32, row-major, and
    ``vocab_map.json`` as little-endian int64, so the parquet writer's version does not matter.
    """
    root = demo_root(root)
    rows = np.ascontiguousarray(read_rows(demo_dataset_path("owt-demo", root) / "train.parquet"), dtype="<i4")
    vocab = np.ascontiguousarray(load_vocab_map(root), dtype="<i8")
    return {"owt_demo_train_rows_sha256": _sha256(rows.tobytes()), "owt_demo_train_shape": list(rows.shape),
            "vocab_map_sha256": _sha256(vocab.tobytes()), "vocab_size": int(vocab.size)}


def recipe_settings(size: DemoSize) -> dict:
    """The settings of ``size`` that decide the pretrained original (:data:`RECIPE_FIELDS`)."""
    d = size.to_dict()
    return {k: d[k] for k in RECIPE_FIELDS}


def _dir(directory: str | os.PathLike | None) -> Path:
    return Path(directory) if directory is not None else SHIPPED_DIR


def read_recipe(directory: str | os.PathLike | None = None) -> dict | None:
    """The shipped original's ``recipe.json`` (``directory`` default :data:`SHIPPED_DIR`), or None if absent."""
    try:
        return json.loads((_dir(directory) / RECIPE_FILE).read_text())
    except FileNotFoundError:
        return None


def shipped_status(root: str | os.PathLike, size: DemoSize, directory: str | os.PathLike | None = None) -> dict:
    """Whether the shipped original can serve ``size`` on the datasets built under ``root``.

    ``{"usable": bool, "reason": str}``; the reason says what differs when it cannot.
    """
    recipe = read_recipe(directory)
    if recipe is None:
        return {"usable": False, "reason": f"no shipped original at {_dir(directory)}"}
    want = recipe_settings(size)
    diff = {k: (recipe["settings"].get(k), v) for k, v in want.items() if recipe["settings"].get(k) != v}
    if diff:
        return {"usable": False, "reason": "the shipped original was made with other settings: " + ", ".join(
            f"{k} {a!r} (this size: {b!r})" for k, (a, b) in diff.items())}
    have = data_fingerprint(root)
    if have != recipe["data"]:
        return {"usable": False, "reason": (
            f"this Python ({platform.python_version()}) builds other demo data than the shipped original was "
            f"trained on (Python {recipe['versions']['python']}): train rows {have['owt_demo_train_shape']} "
            f"sha256 {have['owt_demo_train_rows_sha256'][:12]}, vocabulary {have['vocab_size']} "
            f"(shipped: {recipe['data']['owt_demo_train_shape']}, "
            f"{recipe['data']['owt_demo_train_rows_sha256'][:12]}, {recipe['data']['vocab_size']})")}
    return {"usable": True, "reason": ""}


def install_shipped(root: str | os.PathLike, directory: str | os.PathLike | None = None) -> dict:
    """Copy the shipped original into ``models/original`` under ``root`` after checking its SHA-256.

    Returns the recipe's training numbers (the keys a build's pretrain stage reports) plus its source.
    """
    directory, root = _dir(directory), demo_root(root)
    recipe = read_recipe(directory)
    got = file_sha256(directory / WEIGHTS_FILE)
    if got != recipe["weights_sha256"]:
        raise ValueError(f"{directory / WEIGHTS_FILE} has SHA-256 {got}, its recipe says {recipe['weights_sha256']}: "
                         f"the file is damaged or was replaced; restore it from git or rebuild it: {REBUILD_COMMAND}")
    stale_run = demo_run_path("original", root)
    if stale_run.is_dir():  # the trainer's run of an earlier build that pretrained here (lnfree made it)
        shutil.rmtree(stale_run)
    out = demo_model_path("original", root, must_exist=False)
    out.mkdir(parents=True, exist_ok=True)
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        shutil.copyfile(directory / name, out / name)
    save_vocab_map(out, load_vocab_map(root))
    return {**recipe["training"], "source": "shipped", "shipped_from": str(directory),
            "weights_sha256": recipe["weights_sha256"]}


def fallback_warning(reason: str, size: DemoSize) -> str:
    return (f"demo build: the shipped original cannot be used ({reason}); pretraining it here instead with the "
            f"same recipe ({size.pretrain_steps} steps of {size.batch_size} x {size.seq_len} tokens: about an "
            f"hour on 2 cores). Finished stages are kept if you stop and build again.")


def use_or_warn(root: str | os.PathLike, size: DemoSize, directory: str | os.PathLike | None = None) -> bool:
    """True when the shipped original serves this build; otherwise warn (saying why and what happens)."""
    st = shipped_status(root, size, directory)
    if not st["usable"]:
        warnings.warn(fallback_warning(st["reason"], size), stacklevel=2)
    return st["usable"]


def write_shipped(out: str | os.PathLike, model_dir: str | os.PathLike, root: str | os.PathLike, size: DemoSize,
                  training: dict) -> dict:
    """Write the shipped-original folder ``out`` from a pretrained HF folder ``model_dir`` and its data ``root``."""
    out, model_dir = Path(out), Path(model_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        shutil.copyfile(model_dir / name, out / name)
    save_vocab_map(out, load_vocab_map(root))
    recipe = {
        "what": "the demo suite's original model (GPT-2 architecture, compact vocabulary), pretrained by lnfree's "
                "trainer; `demo build` fine-tunes it (lnfree_core/demo/original.py)",
        "command": REBUILD_COMMAND,
        "size": size.name,
        "settings": recipe_settings(size),
        "data": data_fingerprint(root),
        "training": training,
        "weights_sha256": file_sha256(out / WEIGHTS_FILE),
        "versions": {"python": platform.python_version(), "implementation": sys.implementation.name,
                     "torch": torch.__version__, "transformers": transformers.__version__,
                     "numpy": np.__version__},
    }
    (out / RECIPE_FILE).write_text(json.dumps(recipe, indent=1) + "\n")
    return recipe
