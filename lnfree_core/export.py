"""Export a run as a standard Hugging Face model folder that plain `transformers` loads."""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import yaml
from transformers import AutoTokenizer

from .method.adapters import adapter_for
from .analysis.cache import DEFAULT_CACHE_DIR
from .checkpoint import CheckpointError, verify_checkpoint
from .data.compact_tokenizer import save_compact_tokenizer
from .data.sources import load_sequences
from .data.tokenizer import load_gpt2_tokenizer
from .data.vocab_map import load_vocab_map, save_vocab_map
from .export_metadata import build_metadata, write_metadata
from .export_precision import measure_input_stds, precision_summary, precision_warning
from .hf_lock import HF_BUILD_LOCK
from .model_card import render_model_card, run_evaluations
from .models import load_model
from .method.surgery import fakeln_modules

log = logging.getLogger(__name__)
PRECISION_SEQUENCES = 4  # evaluation sequences the export measures its input stds on

EXPORT_TOLERANCE = 1e-4
LOCAL_SOURCE_FILE = ".lnfree_local.json"  # max |logit difference| in float32 between FakeLN model and export


class ExportError(ValueError):
    pass


@dataclass
class ExportResult:
    out_dir: Path
    logit_max_abs_diff: float
    ln_free: bool
    warnings: list[str] = field(default_factory=list)  # e.g. input stds near the eps-trick limit
    input_std: dict | None = None  # export_precision.precision_summary of the measurement, if made


def _check_logits(a: torch.nn.Module, b: torch.nn.Module, vocab: int, seq: int = 32) -> float:
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, vocab, (2, seq), generator=g)
    with torch.no_grad():
        return float((a(x).logits.float() - b(x).logits.float()).abs().max())


def _stock_eps(config) -> float:
    """The normalisation epsilon of a stock export's config (GPT-2, GPT-NeoX or an RMSNorm family)."""
    for key in ("layer_norm_epsilon", "layer_norm_eps", "rms_norm_eps"):
        if getattr(config, key, None) is not None:
            return float(getattr(config, key))
    raise ExportError(f"the stock {config.model_type} config names no normalisation epsilon")


def _precision_tokens(model, data: str | None, run_cfg: dict | None) -> tuple[torch.Tensor, str]:
    """A few evaluation sequences of `data` (else the run's dataset) to measure input stds on."""
    dataset = data or (run_cfg or {}).get("dataset")
    if not dataset:
        raise ValueError("no dataset to measure on (not a run; pass precision_data / --precision-data)")
    n_pos = int(getattr(model.config, "n_positions", None) or getattr(model.config, "max_position_embeddings", None)
                or 1024)
    hp = ((run_cfg or {}).get("schedule") or {}).get("hparams", {}) if isinstance((run_cfg or {}).get("schedule"), dict) else {}
    seq_len = min(n_pos, int((run_cfg or {}).get("overrides", {}).get("seq_len") or hp.get("seq_len") or n_pos))
    seqs = load_sequences(dataset, seq_len=seq_len, n_sequences=PRECISION_SEQUENCES)
    if len(seqs) == 0:
        raise ValueError(f"dataset {dataset!r} gave no sequence of {seq_len} tokens")
    name = str(dataset)
    return torch.as_tensor(seqs).long(), Path(name).name if Path(name).exists() else name  # published: no local path


COMPACT_VOCAB_CARD = (
    "\n## Vocabulary\n\nThis model has a compact vocabulary of {n} tokens, a subset of GPT-2's. The tokenizer "
    "saved with it (loaded by the snippet above) has exactly these ids; text it cannot spell with them becomes "
    "`<|endoftext|>`. `vocab_map.json` lists the GPT-2 id of each compact id.\n"
)


def _save_tokenizer(spec: str, out: Path, config, base: str | None) -> "np.ndarray | None":
    """A tokenizer whose ids are the model's; returns the vocabulary map of a compact model, else None.

    * a compact-vocabulary model (a vocab_map.json with as many entries as the model has tokens): the
      compact tokenizer plus vocab_map.json;
    * GPT-2: GPT-2's tokenizer (bundled, works offline);
    * other families: the tokenizer of the model they were trained from (`base`), when that is a local
      folder or cached Hub id that has one. A tiny random-init model has none: the export then holds no
      tokenizer files (the weights load all the same).
    """
    vmap = load_vocab_map(spec)
    if vmap is not None and len(vmap) == int(config.vocab_size):
        save_compact_tokenizer(out, vmap, model_max_length=getattr(config, "n_positions", None))
        save_vocab_map(out, vmap)
        return vmap
    if config.model_type == "gpt2":
        load_gpt2_tokenizer().save_pretrained(str(out))
        return None
    if not base:
        return None

    try:
        with HF_BUILD_LOCK:
            tok = AutoTokenizer.from_pretrained(str(base), local_files_only=True)
    except (OSError, ValueError, TypeError):
        return None
    tok.save_pretrained(str(out))
    return None


EXPORT_MARKERS = ("lnfree_export.json", LOCAL_SOURCE_FILE)  # written by every export: "made by lnfree"
RUN_MARKERS = ("checkpoints", "status.json", "config.yaml", "metrics.jsonl", "job.json", "trainer.lock")


def _is_run_dir(path: Path) -> bool:
    return any((path / m).exists() for m in RUN_MARKERS)


def check_export_target(out_dir: str | Path, overwrite: bool) -> bool:
    """Whether `out_dir` may receive an export; True if an earlier export there is to be replaced.

    Refused (ExportError): a file; a run directory, a folder holding one, or a folder inside one;
    a non-empty folder without overwrite; with overwrite, a non-empty folder that is not an earlier
    lnfree export (it lacks the files every export writes). Nothing else is ever deleted.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out} is a file, not a folder: give a folder to export to (it is created if absent)")
    resolved = out.resolve()
    for parent in [resolved, *resolved.parents]:
        if parent.is_dir() and _is_run_dir(parent):
            where = "is" if parent == resolved else "lies inside"
            raise ExportError(f"{out} {where} the run directory {parent}: export to a folder outside any run "
                              "(e.g. exports/NAME)")
    if not out.exists() or not any(out.iterdir()):
        return False
    if not overwrite:
        raise ExportError(f"{out} exists and is not empty; choose another folder, or pass overwrite (CLI: "
                          "--overwrite) to replace an earlier lnfree export there")
    if not any((out / m).is_file() for m in EXPORT_MARKERS):
        raise ExportError(f"{out} is not an earlier lnfree export (it has no {EXPORT_MARKERS[0]}): overwrite only "
                          "replaces an lnfree export; choose an empty or new folder")
    for sub, dirs, _files in os.walk(out):
        if _is_run_dir(Path(sub)):
            raise ExportError(f"{out} holds the run directory {sub}: it is not replaced; choose another folder")
    return True


def export_model(spec: str, out_dir: str | Path, *, allow_live: bool = False, overwrite: bool = False,
                 repo_name: str | None = None, eval_table_md: str | None = None,
                 precision_data: str | None = None,
                 cache_dir: str | Path | None = DEFAULT_CACHE_DIR) -> ExportResult:
    """Export `spec` (a run directory, checkpoint or model) to `out_dir` as a stock HF model folder.

    The logits of the export are checked against the FakeLN model on a random batch; an export that
    differs by more than EXPORT_TOLERANCE is refused. `overwrite` replaces only an earlier lnfree
    export (check_export_target). The folder also gets lnfree_metadata.json (export_metadata: every
    block's sigma_bar, gamma, beta, the schedule, the base model's Hub id), and the per-token stds of
    every LN block's input are measured on a few sequences of `precision_data` (default: the run's
    dataset); the result warns when they near the limit of the stock form's epsilon trick
    (export_precision). The model card gets the CE table `eval_table_md`, or else the CE evaluations
    of this checkpoint found in the analysis cache `cache_dir`.
    """
    out = Path(out_dir)
    replace = check_export_target(out, overwrite)
    try:
        loaded = load_model(spec, device="cpu", dtype=torch.float32)
    except CheckpointError as e:
        raise ExportError(str(e)) from None
    ckpt = loaded.info.get("checkpoint")
    if ckpt:
        why = verify_checkpoint(ckpt, hashes=True)  # what is published must be exactly what was trained
        if why:
            raise ExportError(f"checkpoint {ckpt} is corrupt ({why}); export an earlier one (RUN_DIR@STEP)")
    model = loaded.model
    n_removed, n_blocks = loaded.info.get("n_removed", 0), loaded.info.get("n_blocks", 0)
    if 0 < n_removed < n_blocks:
        raise ExportError(
            f"{spec} is partly LN-free ({n_removed} of {n_blocks} LayerNorm blocks removed, the others are live "
            "LayerNorms): a stock GPT-2 folder cannot hold that mix, with or without --allow-live. Export a "
            "checkpoint taken after the schedule's last removal event (the run directory itself once it has "
            "finished, or RUN_DIR@STEP of a later step)."
        )
    if not loaded.ln_free and not allow_live:
        raise ExportError(
            f"{spec} still has live LayerNorms (a vanilla run, or a schedule that has not finished): exporting it "
            "publishes an ordinary GPT-2. Pass allow_live=True (CLI: --allow-live) to export it anyway."
        )
    try:
        with HF_BUILD_LOCK:  # builds a model: transformers' build state is process-wide (see hf_lock)
            stock = adapter_for(model).to_stock(model, allow_live=allow_live)
    except ValueError as e:
        raise ExportError(str(e)) from None
    stock.eval()
    seq = min(32, int(getattr(model.config, "n_positions", 32)))
    diff = _check_logits(model, stock, model.config.vocab_size, seq)
    if diff > EXPORT_TOLERANCE:
        raise ExportError(f"exported model's logits differ by {diff:.3g} > {EXPORT_TOLERANCE}; export refused")
    run_dir, mode, schedule, base, cfg = None, "ln-free" if loaded.ln_free else "vanilla", None, None, None
    if ckpt and (Path(ckpt).parent.parent / "config.yaml").exists():
        run_dir = Path(ckpt).parent.parent
        cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
        mode, schedule, base = cfg.get("mode", mode), cfg.get("schedule"), cfg.get("model")
    elif loaded.info.get("metadata"):  # re-exporting an export: keep what its metadata knew
        meta_in = loaded.info["metadata"]
        schedule, base = meta_in.get("schedule"), meta_in.get("base_model")
    warns: list[str] = []
    summary = None
    if loaded.ln_free:
        try:
            tokens, data_name = _precision_tokens(model, precision_data, cfg)
            per_block = measure_input_stds(model, tokens)
            summary = precision_summary(per_block, eps=_stock_eps(stock.config), sequences=len(tokens),
                                        tokens=int(tokens.numel()), data=data_name)
            w = precision_warning(summary)
            if w:
                warns.append(w)
        except (ValueError, OSError, RuntimeError, IndexError) as e:
            warns.append(f"the input stds of the export were not measured ({e}); the stock form is exact only "
                         "while each token's std stays under about 300. Pass precision_data (CLI: --precision-data).")
        for w in warns:
            log.warning(w)
    meta = build_metadata(model, base_model=base, schedule=schedule if isinstance(schedule, dict) else None,
                          input_std=summary, export_eps=_stock_eps(stock.config))
    if replace:
        check_export_target(out, overwrite)  # still an earlier export (checked again just before deleting)
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    stock.save_pretrained(str(out))
    vmap = _save_tokenizer(spec, out, model.config, base or (None if ckpt else spec))
    sigmas = {n: float(m.sigma) for n, m in fakeln_modules(model).items() if m.is_removed}
    card = render_model_card(repo_name=repo_name or out.name, base_model=base, mode=mode,
                             schedule=schedule if isinstance(schedule, dict) else None, run_dir=run_dir,
                             logit_max_abs_diff=diff, eval_table_md=eval_table_md,
                             model_type=model.config.model_type, input_std=summary, sigmas=sigmas,
                             ce_rows=run_evaluations(ckpt, cache_dir) if not eval_table_md else None)
    if vmap is not None:
        card += COMPACT_VOCAB_CARD.format(n=len(vmap))
    (out / "README.md").write_text(card)
    write_metadata(out, meta)
    # Names only, no local absolute paths: this file is published with the model.
    (out / "lnfree_export.json").write_text(json.dumps({
        "source": Path(spec.partition("@")[0]).name or spec, "checkpoint": Path(ckpt).name if ckpt else None,
        "ln_free": loaded.ln_free, "mode": mode,
        "logit_max_abs_diff": diff, "tolerance": EXPORT_TOLERANCE,
    }, indent=1))
    # Where it came from on this machine (absolute paths): for reusing exports; never uploaded.
    (out / LOCAL_SOURCE_FILE).write_text(json.dumps({"source": spec, "checkpoint": ckpt}, indent=1))
    return ExportResult(out, diff, loaded.ln_free, warns, summary)
