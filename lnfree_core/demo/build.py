"""`build_demo`: the demo suite, end to end, offline, resumable, with progress.

Stages, in order (each reused when finished, redone when half-built; see :mod:`.stages`):

1. ``datasets``  OWT-like train/validation and Pile-like sets in compact ids (:mod:`.datasets_stage`)
2. ``filter``    the Pile-filtered set (reference = OWT-like train split, target = Pile-like set)
3. ``init``      a freshly initialised GPT-2 over the compact vocabulary
4. ``pretrain``  the trainer (vanilla mode) from it -> ``demo:original`` (:mod:`.models_stage`)
5. ``vanilla``   vanilla fine-tune of the original -> ``demo:vanilla`` (export)
6. ``ln-free``   LN-removal fine-tune of the original -> ``demo:ln-free`` (export)
7. ``evaluate``  mean CE of the three models on validation, Pile-like and Pile-filtered sets

then ``summary.json``: sizes, timings, CE table and the two quality statements (the original's
validation CE far below the corpus's unigram entropy; the LN-free model within
``MAX_LN_FREE_GAP`` nats of the vanilla control), which the build also returns.

``progress(stage, done, total)`` is called as work advances (from a helper thread while a model
trains); :func:`overall_fraction` turns it into the build's overall fraction.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Callable

from lnfree_core.models import load_model

from .cpu import choose_threads, torch_threads
from .datasets_stage import make_datasets, make_filtered
from .evaluate import mean_ce
from .models_stage import DemoBuildCancelled, DemoBuildError, make_finetune, make_init, make_original
from .original import write_shipped
from .paths import (DATASET_NAMES, MODEL_NAMES, demo_dataset_path, demo_model_path, demo_root, demo_run_path,
                    init_model_path, summary_path)
from .sizes import DemoSize, get_size
from .stages import STAGES, Stage, stage_key
from .tokens import read_rows

Progress = Callable[[str, int, int], None]
FORMAT_VERSION = 1  # bump when a stage's output format changes: every stage is then redone
MIN_UNIGRAM_MARGIN = 1.0  # nats: "far below the unigram entropy"
MAX_LN_FREE_GAP = 0.15  # nats: LN-free validation CE minus vanilla's
DEFAULT_WORK = Path("lnfree_home") / "demo-original-work"  # rebuild_original's default work root

__all__ = ["DemoBuildCancelled", "DemoBuildError", "STAGES", "build_demo", "overall_fraction", "rebuild_original",
           "stage_weights"]


def stage_weights(size: DemoSize) -> dict[str, float]:
    """Each stage's share of the build's work (sums to 1), from token counts; for overall progress."""
    train_tok = size.batch_size * size.seq_len
    pretrain = 0 if size.original == "shipped" else size.pretrain_steps * train_tok  # shipped: a file copy
    w = {"pretrain": pretrain, "vanilla": size.finetune_steps * train_tok,
         "ln-free": 1.15 * size.finetune_steps * train_tok, "evaluate": 3 * 3 * size.eval_rows * size.seq_len / 3}
    work = sum(w.values())
    w.update(datasets=0.06 * work, filter=0.01 * work, init=0.002 * work)
    if size.original == "shipped":
        w["pretrain"] = 0.002 * work
    total = sum(w.values())
    return {s: w[s] / total for s in STAGES}


def overall_fraction(size: DemoSize, stage: str, done: int, total: int) -> float:
    """The build's overall progress (0..1) when ``stage`` is at ``done``/``total``."""
    weights = stage_weights(size)
    if stage not in weights:
        return 1.0
    before = sum(weights[s] for s in STAGES[:STAGES.index(stage)])
    return min(1.0, before + weights[stage] * (done / total if total else 1.0))


# Settings added after the first release, with the value that reproduces the earlier builds: they join a
# stage's key only when set otherwise, so that suites built before they existed stay valid (not rebuilt).
_LATER_SETTINGS = {"row_start_eot": False, "tie_embeddings": True, "pretrain_weight_decay": 0.01,
                   "ioi_sentences": 0, "original": "pretrain", "repeat_spans": 0}


def _stage_params(size: DemoSize) -> dict[str, dict]:
    d = size.to_dict()

    def pick(*keys):
        return {k: d[k] for k in keys if k not in _LATER_SETTINGS or d[k] != _LATER_SETTINGS[k]}

    return {
        "datasets": {**pick("prose_chars", "val_every", "pile_rows", "seq_len", "row_start_eot",
                          "ioi_sentences", "repeat_spans"),
                     **({"ioi_seed": size.seed} if size.ioi_sentences else {}),
                     "format": FORMAT_VERSION},
        "filter": pick("filter_keep"),
        "init": pick("n_layer", "n_embd", "n_head", "tie_embeddings", "seed"),
        "pretrain": pick("pretrain_steps", "pretrain_lr", "pretrain_min_lr", "pretrain_warmup",
                         "pretrain_weight_decay", "batch_size", "original"),
        "vanilla": pick("finetune_steps", "finetune_lr", "finetune_min_lr", "finetune_warmup", "aux_weight"),
        "ln-free": pick("finetune_steps", "finetune_lr", "finetune_min_lr", "finetune_warmup", "aux_weight"),
        "evaluate": pick("eval_rows"),
    }


def _outputs(root: Path) -> dict[str, list[Path]]:
    return {
        "datasets": [demo_dataset_path("owt-demo", root), demo_dataset_path("pile-demo", root),
                     root / "vocab_map.json"],
        "filter": [demo_dataset_path("pile-filtered-demo", root)],
        "init": [init_model_path(root)],
        "pretrain": [demo_run_path("original", root), demo_model_path("original", root, must_exist=False)],
        "vanilla": [demo_run_path("vanilla", root), demo_model_path("vanilla", root, must_exist=False)],
        "ln-free": [demo_run_path("ln-free", root), demo_model_path("ln-free", root, must_exist=False)],
        "evaluate": [],
    }


def plan_stages(root: Path, size: DemoSize) -> list[Stage]:
    """The build's stages under ``root`` for ``size``, with their chained keys."""
    params, outputs = _stage_params(size), _outputs(root)
    stages, key = [], None
    for name in STAGES:
        key = stage_key(name, params[name], key)
        stages.append(Stage(root, name, key, outputs[name]))
    return stages


def evaluate_models(root: Path, size: DemoSize, progress: Progress) -> dict:
    """Mean CE of each demo model on each demo dataset (first ``eval_rows`` sequences)."""
    sets = {
        "owt-demo": read_rows(demo_dataset_path("owt-demo", root) / "validation.parquet")[:size.eval_rows],
        "pile-demo": read_rows(demo_dataset_path("pile-demo", root) / "train.parquet")[:size.eval_rows],
        "pile-filtered-demo":
            read_rows(demo_dataset_path("pile-filtered-demo", root) / "train.parquet")[:size.eval_rows],
    }
    total, done = len(MODEL_NAMES) * len(sets), 0
    ce, ln_free = {}, {}
    progress("evaluate", 0, total)
    for name in MODEL_NAMES:
        loaded = load_model(str(demo_model_path(name, root)), device="cpu", dtype=None)
        ln_free[name] = loaded.ln_free
        ce[name] = {}
        for ds, rows in sets.items():
            ce[name][ds] = mean_ce(loaded.model, rows)
            done += 1
            progress("evaluate", done, total)
    return {"ce": ce, "ln_free": ln_free, "sequences": {k: len(v) for k, v in sets.items()}}


def _quality(H: float, ce: dict) -> dict:
    val = "owt-demo"
    margin = H - ce["original"][val]
    gap = ce["ln-free"][val] - ce["vanilla"][val]
    return {
        "unigram_entropy": H,
        "original_val_ce": ce["original"][val],
        "original_below_unigram": margin,
        "original_far_below_unigram": margin >= MIN_UNIGRAM_MARGIN,
        "vanilla_val_ce": ce["vanilla"][val],
        "ln_free_val_ce": ce["ln-free"][val],
        "ln_free_minus_vanilla": gap,
        "ln_free_close_to_vanilla": abs(gap) <= MAX_LN_FREE_GAP,
        "thresholds": {"min_unigram_margin": MIN_UNIGRAM_MARGIN, "max_ln_free_gap": MAX_LN_FREE_GAP},
        "statements": [
            f"original validation CE {ce['original'][val]:.3f} nats vs unigram entropy {H:.3f} nats: "
            f"{margin:.3f} below (want >= {MIN_UNIGRAM_MARGIN})",
            f"LN-free validation CE {ce['ln-free'][val]:.3f} vs vanilla {ce['vanilla'][val]:.3f}: "
            f"difference {gap:+.3f} nats (want within {MAX_LN_FREE_GAP})",
        ],
    }


def _summary(root: Path, size: DemoSize, records: dict[str, dict], wall: float) -> dict:
    res = {name: rec["result"] for name, rec in records.items()}
    data, ev = res["datasets"], res["evaluate"]
    return {
        "root": str(root),
        "size": size.name,
        "settings": size.to_dict(),
        "built": max(rec["finished"] for rec in records.values()),
        "stage_keys": {name: rec["key"] for name, rec in records.items()},
        "stage_seconds": {name: rec["seconds"] for name, rec in records.items()},
        "stage_cpu_seconds": {name: rec["result"].get("cpu_seconds") for name, rec in records.items()},
        "stage_threads": {name: rec["result"].get("threads") for name, rec in records.items()},
        "build_seconds": round(sum(rec["seconds"] for rec in records.values()), 3),
        "this_run_seconds": round(wall, 3),
        "source": data["source"],
        "vocab": {"size": data["vocab_size"], "eot_compact_id": data["eot_compact_id"]},
        "datasets": {
            "owt-demo": {"path": str(demo_dataset_path("owt-demo", root)), "train_sequences": data["train_sequences"],
                         "validation_sequences": data["validation_sequences"], "seq_len": size.seq_len},
            "pile-demo": {"path": str(demo_dataset_path("pile-demo", root)), "sequences": data["pile_sequences"],
                          "seq_len": size.seq_len},
            "pile-filtered-demo": {"path": str(demo_dataset_path("pile-filtered-demo", root)), **res["filter"],
                                   "seq_len": size.seq_len},
        },
        "models": {
            name: {"spec": f"demo:{name}", "path": str(demo_model_path(name, root, must_exist=False)),
                   "run_dir": str(demo_run_path(name, root)), "ln_free": ev["ln_free"][name],
                   "training": res["pretrain" if name == "original" else name]}
            for name in MODEL_NAMES
        },
        "model_config": {**{k: getattr(size, k) for k in ("n_layer", "n_embd", "n_head", "seq_len")},
                         "parameters": res["init"]["parameters"], "vocab_size": data["vocab_size"]},
        "ce": ev["ce"],
        "eval_sequences": ev["sequences"],
        "quality": _quality(data["unigram_entropy"], ev["ce"]),
    }


def _write_summary(root: Path, summary: dict) -> None:
    path = summary_path(root)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(summary, indent=1) + "\n")
    os.replace(tmp, path)


def build_demo(root: str | os.PathLike | None = None, size: str | DemoSize = "full",
               progress: Progress | None = None, threads: int | None = None) -> dict:
    """Build (or finish, or reuse) the demo suite under ``root`` (default ``./lnfree_home/demo``).

    ``threads``: torch CPU threads (None: chosen by :func:`.cpu.choose_threads`). Returns the
    summary (also written to ``summary.json``). Raises :class:`DemoBuildError` (or the underlying
    error) when a stage fails; finished stages stay finished for the next attempt.
    """
    n_threads = choose_threads(threads)
    with torch_threads(n_threads):
        return _build(demo_root(root), size, progress, n_threads)


def _build(root: Path, size: str | DemoSize, progress: Progress | None, n_threads: int) -> dict:
    size = get_size(size) if isinstance(size, str) else size
    t_start = time.perf_counter()
    records = _run_stages(root, size, progress, n_threads)
    summary = _summary(root, size, records, time.perf_counter() - t_start)
    _write_summary(root, summary)
    return summary


def _run_stages(root: Path, size: DemoSize, progress: Progress | None, n_threads: int,
                until: str | None = None, pretrain_device: str = "cpu") -> dict[str, dict]:
    """Run (or reuse) the stages in order, up to and including ``until`` (None: all); their records.
    ``pretrain_device``: where the pretrain stage trains (the fine-tunes and evaluation stay on the CPU)."""
    report = progress or (lambda stage, done, total: None)
    root.mkdir(parents=True, exist_ok=True)
    makers = {
        "datasets": lambda: make_datasets(root, size, report),
        "filter": lambda: make_filtered(root, size, report),
        "init": lambda: make_init(root, size, report),
        "pretrain": lambda: make_original(root, size, report, pretrain_device),
        "vanilla": lambda: make_finetune(root, size, "vanilla", report),
        "ln-free": lambda: make_finetune(root, size, "ln-free", report),
        "evaluate": lambda: evaluate_models(root, size, report),
    }
    records: dict[str, dict] = {}
    redo = False  # once a stage is (re)done, every later stage is redone too: it may have used the old outputs
    for stage in plan_stages(root, size):
        rec = None if redo else stage.load()
        if rec is None:
            redo = True
            stage.clear()
            t0, c0 = time.perf_counter(), time.process_time()
            result = makers[stage.name]()
            result["cpu_seconds"] = round(time.process_time() - c0, 3)
            result["threads"] = n_threads
            rec = stage.finish(result, time.perf_counter() - t0)
        else:
            report(stage.name, 1, 1)
        records[stage.name] = rec
        if stage.name == until:
            break
    return records


def rebuild_original(out: str | os.PathLike, work: str | os.PathLike | None = None, size: str | DemoSize = "findings",
                     progress: Progress | None = None, threads: int | None = None, device: str = "cpu") -> dict:
    """Pretrain the shipped original again (:mod:`.original`) and write its folder ``out``; returns its recipe.

    Runs the build's ``datasets``, ``filter``, ``init`` and ``pretrain`` stages for ``size`` with
    ``original="pretrain"`` in the demo root ``work`` (default ``./lnfree_home/demo-original-work``; finished
    stages are reused; a stopped pretraining starts again), then writes ``config.json``,
    ``model.safetensors`` and ``recipe.json`` (settings, data SHA-256, training numbers) to ``out``.
    ``device``: where the pretraining runs (the trainer's auto | cpu | cuda | cuda:N, float32; the recipe's
    training numbers record it). A longer recipe is a change to the ``findings`` size in :mod:`.sizes`.
    """
    sz = get_size(size) if isinstance(size, str) else size
    sz = dataclasses.replace(sz, original="pretrain")
    work = demo_root(work if work is not None else Path.cwd() / DEFAULT_WORK)
    n_threads = choose_threads(threads)
    with torch_threads(n_threads):
        records = _run_stages(work, sz, progress, n_threads, until="pretrain", pretrain_device=device)
    return write_shipped(out, demo_model_path("original", work), work, sz, records["pretrain"]["result"])
