"""Export a run as a standard Hugging Face model folder that plain `transformers` loads."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml

from .adapters import adapter_for
from .hf_lock import HF_BUILD_LOCK
from .model_card import render_model_card
from .models import load_model

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


COMPACT_VOCAB_CARD = (
    "\n## Vocabulary\n\nThis model has a compact vocabulary of {n} tokens, a subset of GPT-2's. The tokenizer "
    "saved with it (loaded by the snippet above) has exactly these ids; text it cannot spell with them becomes "
    "`<|endoftext|>`. `vocab_map.json` lists the GPT-2 id of each compact id.\n"
)


def _save_tokenizer(spec: str, out: Path, config) -> "np.ndarray | None":
    """A tokenizer whose ids are the model's: GPT-2's, or for a compact-vocabulary model (a vocab_map.json
    with as many entries as the model has tokens) the compact tokenizer plus vocab_map.json. Returns
    the map, or None."""
    from .data.vocab_map import load_vocab_map, save_vocab_map

    vmap = load_vocab_map(spec)
    n_pos = getattr(config, "n_positions", None)
    if vmap is not None and len(vmap) == int(config.vocab_size):
        from .data.compact_tokenizer import save_compact_tokenizer

        save_compact_tokenizer(out, vmap, model_max_length=n_pos)
        save_vocab_map(out, vmap)
        return vmap
    from .data.tokenizer import load_gpt2_tokenizer

    load_gpt2_tokenizer().save_pretrained(str(out))
    return None


def export_model(spec: str, out_dir: str | Path, *, allow_live: bool = False, overwrite: bool = False,
                 repo_name: str | None = None, eval_table_md: str | None = None) -> ExportResult:
    """Export `spec` (a run directory, checkpoint or model) to `out_dir` as a stock HF model folder.

    The logits of the export are checked against the FakeLN model on a random batch; an export that
    differs by more than EXPORT_TOLERANCE is refused.
    """
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise ExportError(f"{out} exists and is not empty; choose another folder or pass overwrite")
    loaded = load_model(spec, device="cpu", dtype=torch.float32)
    model = loaded.model
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
    if out.exists() and overwrite:
        shutil.rmtree(out)
    out.mkdir(parents=True)
    stock.save_pretrained(str(out))
    vmap = _save_tokenizer(spec, out, model.config)
    run_dir, mode, schedule, base = None, "ln-free" if loaded.ln_free else "vanilla", None, None
    ckpt = loaded.info.get("checkpoint")
    if ckpt and (Path(ckpt).parent.parent / "config.yaml").exists():
        run_dir = Path(ckpt).parent.parent
        cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
        mode, schedule, base = cfg.get("mode", mode), cfg.get("schedule"), cfg.get("model")
    card = render_model_card(repo_name=repo_name or out.name, base_model=base, mode=mode,
                             schedule=schedule if isinstance(schedule, dict) else None, run_dir=run_dir,
                             logit_max_abs_diff=diff, eval_table_md=eval_table_md)
    if vmap is not None:
        card += COMPACT_VOCAB_CARD.format(n=len(vmap))
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
