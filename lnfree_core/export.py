"""Export a run as a standard Hugging Face model folder that plain `transformers` loads."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

from .adapters import adapter_for
from .analysis.cache import DEFAULT_CACHE_DIR
from .checkpoint import CheckpointError, verify_checkpoint
from .model_card import render_model_card, run_evaluations
from .models import load_model
from .surgery import fakeln_modules

EXPORT_TOLERANCE = 1e-4
LOCAL_SOURCE_FILE = ".lnfree_local.json"  # max |logit difference| in float32 between FakeLN model and export


class ExportError(ValueError):
    pass


@dataclass
class ExportResult:
    out_dir: Path
    logit_max_abs_diff: float
    ln_free: bool


def _check_logits(a: torch.nn.Module, b: torch.nn.Module, vocab: int, seq: int = 32) -> float:
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, vocab, (2, seq), generator=g)
    with torch.no_grad():
        return float((a(x).logits.float() - b(x).logits.float()).abs().max())


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
                 cache_dir: str | Path | None = DEFAULT_CACHE_DIR) -> ExportResult:
    """Export `spec` (a run directory, checkpoint or model) to `out_dir` as a stock HF model folder.

    The logits of the export are checked against the FakeLN model on a random batch; an export that
    differs by more than EXPORT_TOLERANCE is refused. `overwrite` replaces only an earlier lnfree
    export (check_export_target). The model card gets the CE table `eval_table_md`, or else the CE
    evaluations of this checkpoint found in the analysis cache `cache_dir`.
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
        stock = adapter_for(model).to_stock(model, allow_live=allow_live)
    except ValueError as e:
        raise ExportError(str(e)) from None
    stock.eval()
    seq = min(32, int(getattr(model.config, "n_positions", 32)))
    diff = _check_logits(model, stock, model.config.vocab_size, seq)
    if diff > EXPORT_TOLERANCE:
        raise ExportError(f"exported model's logits differ by {diff:.3g} > {EXPORT_TOLERANCE}; export refused")
    if replace:
        check_export_target(out, overwrite)  # still an earlier export (checked again just before deleting)
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    stock.save_pretrained(str(out))
    from .data.tokenizer import load_gpt2_tokenizer

    load_gpt2_tokenizer().save_pretrained(str(out))
    run_dir, mode, schedule, base = None, "ln-free" if loaded.ln_free else "vanilla", None, None
    if ckpt and (Path(ckpt).parent.parent / "config.yaml").exists():
        run_dir = Path(ckpt).parent.parent
        cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
        mode, schedule, base = cfg.get("mode", mode), cfg.get("schedule"), cfg.get("model")
    sigmas = {n: float(m.sigma) for n, m in fakeln_modules(model).items() if m.is_removed}
    card = render_model_card(repo_name=repo_name or out.name, base_model=base, mode=mode,
                             schedule=schedule if isinstance(schedule, dict) else None, run_dir=run_dir,
                             logit_max_abs_diff=diff, eval_table_md=eval_table_md, sigmas=sigmas,
                             ce_rows=run_evaluations(ckpt, cache_dir) if not eval_table_md else None)
    (out / "README.md").write_text(card)
    # Names only, no local absolute paths: this file is published with the model.
    (out / "lnfree_export.json").write_text(json.dumps({
        "source": Path(spec.partition("@")[0]).name or spec, "checkpoint": Path(ckpt).name if ckpt else None,
        "ln_free": loaded.ln_free, "mode": mode,
        "logit_max_abs_diff": diff, "tolerance": EXPORT_TOLERANCE,
    }, indent=1))
    # Where it came from on this machine (absolute paths): for reusing exports; never uploaded.
    (out / LOCAL_SOURCE_FILE).write_text(json.dumps({"source": spec, "checkpoint": ckpt}, indent=1))
    return ExportResult(out, diff, loaded.ln_free)
