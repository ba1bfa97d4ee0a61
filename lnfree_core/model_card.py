"""The model card (README.md) written with every export."""

from __future__ import annotations

import json
import re
from pathlib import Path

from .runlog import read_jsonl

_HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,95}(/[A-Za-z0-9][A-Za-z0-9_.-]{0,95})?")


def hub_base_model(spec: str | None) -> str | None:
    """`spec` if it names a model on the Hugging Face Hub (an id like `gpt2` or `org/name`), else None.

    Local folders, run directories, checkpoints (`RUN@STEP`) and demo models are not Hub ids: nothing
    about the machine the model was trained on goes into a published card.
    """
    if not spec or not isinstance(spec, str) or spec.startswith(("demo:", "/", ".", "~")) or "@" in spec:
        return None
    if "\\" in spec or ".." in spec or not _HUB_ID.fullmatch(spec) or spec.count("/") > 1:
        return None
    if Path(spec).exists():  # a local folder that happens to look like an id
        return None
    return spec


def sigma_table(sigmas: dict[str, float]) -> list[str]:
    """Markdown table of the frozen sigma_bar of every removed block: one row per layer, and LN^f."""
    layers = sorted({int(k.split(".")[1]) for k in sigmas if "." in k})
    kinds = [k for k in ("mlp", "qk", "v") if any(n.startswith(k + ".") for n in sigmas)]
    head = {"mlp": "σ̄ LN_MLP (ln_2)", "qk": "σ̄ LN_qk (ln_1, Q and K)", "v": "σ̄ LN_v (ln_1, V)"}
    cols = [head[k] for k in kinds] + (["ρ = σ̄_qk / σ̄_v"] if {"qk", "v"} <= set(kinds) else [])
    lines = ["| layer | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    for layer in layers:
        vals = [sigmas.get(f"{k}.{layer}") for k in kinds]
        cells = [f"{v:.6g}" if v is not None else "-" for v in vals]
        if {"qk", "v"} <= set(kinds):
            qk, v = sigmas.get(f"qk.{layer}"), sigmas.get(f"v.{layer}")
            cells.append(f"{qk / v:.6g}" if qk is not None and v else "-")
        lines.append(f"| {layer} | " + " | ".join(cells) + " |")
    if "f" in sigmas:
        lines += ["", f"Final LayerNorm LN^f (ln_f): σ̄ = {sigmas['f']:.6g}"]
    return lines


def run_evaluations(checkpoint: str | Path | None, cache_dir: str | Path | None) -> list[dict]:
    """CE evaluations of exactly this checkpoint found in the analysis cache (`eval`, the Compare page).

    Each: {"dataset": name (no local path), "split", "seq_len", "sequences", "tokens", "mean", "median"}.
    """
    if checkpoint is None or cache_dir is None:
        return []
    root = Path(cache_dir) / "ce"
    want = str(Path(checkpoint).resolve())
    rows = []
    for key_file in sorted(root.glob("*/key.json")) if root.is_dir() else []:
        try:
            key = json.loads(key_file.read_text())
            res = json.loads((key_file.parent / "result.json").read_text())
            if (key.get("model") or {}).get("checkpoint") != want:
                continue
            data, summary = key.get("data") or {}, res.get("summary") or {}
            name = str(res.get("dataset") or data.get("dataset") or "?")
            rows.append({"dataset": Path(name).name if ("/" in name or Path(name).exists()) else name,
                         "split": data.get("split"), "seq_len": data.get("seq_len"),
                         "sequences": res.get("n_sequences"), "tokens": summary.get("tokens"),
                         "mean": float(summary["mean"]), "median": float(summary["median"])})
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue
    return rows


def ce_rows_table(rows: list[dict]) -> str:
    lines = ["| dataset | split | seq_len | sequences | tokens | mean CE (nats/token) | median CE |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['dataset']} | {r['split'] or '-'} | {r['seq_len'] or '-'} | {r['sequences'] or '-'} | "
                     f"{r['tokens'] or '-'} | {r['mean']:.4f} | {r['median']:.4f} |")
    return "\n".join(lines)


def _training_summary(run_dir) -> dict:
    rows = read_jsonl(run_dir / "metrics.jsonl") if run_dir else []
    steps = [r for r in rows if r.get("type") == "step"]
    removals = [r for r in rows if r.get("type") == "event" and r.get("kind") == "removal"]
    if not steps:
        return {}
    return {
        "steps": steps[-1]["step"],
        "tokens": steps[-1].get("tokens"),
        "final_loss": steps[-1]["loss"],
        "removal_events": len(removals),
    }


def render_model_card(*, repo_name: str, base_model: str | None, mode: str, schedule: dict | None,
                      run_dir=None, logit_max_abs_diff: float | None = None,
                      eval_table_md: str | None = None, sigmas: dict[str, float] | None = None,
                      ce_rows: list[dict] | None = None) -> str:
    """The card. `base_model` goes into the front matter only if it is a Hub id (hub_base_model);
    `sigmas`: the frozen sigma_bar of each removed block; `ce_rows`: evaluations of this checkpoint
    (used when no `eval_table_md` is given)."""
    s = _training_summary(run_dir)
    ln_free = mode == "ln-free"
    base_model = hub_base_model(base_model)
    lines = ["---", "library_name: transformers", "tags:", "- lnfree", "- gpt2"]
    if ln_free:
        lines.append("- layernorm-free")
    if base_model:
        lines += ["base_model:", f"- {base_model}"]
    lines += ["---", "", f"# {repo_name}", ""]
    base_txt = f"`{base_model}`" if base_model else "a GPT-2 model (a local model, not on the Hub)"
    if ln_free:
        lines += [
            f"A LayerNorm-free version of {base_txt} made with lnfree: every LayerNorm was replaced, one block "
            "at a time during fine-tuning, by FakeLN(x) = (x - mean(x)) / sigma_bar * gamma + beta with a frozen "
            "scalar sigma_bar (Baroni et al. 2025, \"Transformers Don't Need LayerNorm at Inference Time\").",
            "",
            "The weights are a stock GPT-2 checkpoint: each LayerNorm has epsilon 1e12 and weight "
            "gamma * 1e6 / sigma_bar, which makes it the affine map above to float32 precision. Keep the model "
            "in float32 (the rescaled LayerNorm weights overflow float16).",
        ]
    else:
        lines += [f"A fine-tuned {base_txt} made with lnfree ({mode} run: LayerNorm kept)."]
    lines += ["", "## Usage", "", "```python", "from transformers import GPT2LMHeadModel, AutoTokenizer",
              f'model = GPT2LMHeadModel.from_pretrained("{repo_name}")',
              f'tokenizer = AutoTokenizer.from_pretrained("{repo_name}")', "```", ""]
    if s:
        lines += ["## Training", "", f"- optimizer steps: {s['steps']}", f"- tokens: {s.get('tokens')}",
                  f"- final training loss: {s['final_loss']:.4f}", f"- LN removal events: {s['removal_events']}"]
    if schedule:
        hp = schedule.get("hparams", {})
        lines += [f"- schedule: {schedule.get('name')} (starts {schedule.get('starts')}, gaps {schedule.get('gaps')}, "
                  f"order {schedule.get('order')})",
                  f"- lr {hp.get('lr')} -> {hp.get('min_lr')}, warmup {hp.get('warmup_steps')}, "
                  f"batch {hp.get('micro_batch_size')} x {hp.get('grad_accum_steps')} x {hp.get('seq_len')} tokens, "
                  f"aux weight {hp.get('aux_weight')}, sigma EMA {hp.get('sigma_ema')}"]
    if sigmas:
        lines += ["", "## Frozen σ̄ of every LayerNorm block", "",
                  "The scalar σ̄ each FakeLN block divides by since its removal (the running average of the "
                  "block's per-token standard deviation at the removal step):", "", *sigma_table(sigmas)]
        if any(k.startswith("v.") for k in sigmas) and any(k.startswith("qk.") for k in sigmas):
            lines += ["", "A stock GPT-2 has one ln_1 for Q, K and V, so the export stores σ̄_qk in ln_1 and "
                      "rescales the value part of `c_attn`: per layer, W_V is multiplied by ρ = σ̄_qk / σ̄_v and "
                      "b_V becomes b_V + (1 - ρ) β W_V (β: the ln_1 bias), which is exact since "
                      "LN_v(x) = ρ (LN_qk(x) - β) + β. The value weights in this repo are therefore not the "
                      "trained ones but these rescaled ones."]
    if logit_max_abs_diff is not None:
        lines += ["", f"Export check: max |logit difference| to the FakeLN model = {logit_max_abs_diff:.2e} (float32)."]
    if eval_table_md:
        lines += ["", "## Evaluation (mean cross-entropy)", "", eval_table_md]
    elif ce_rows:
        lines += ["", "## Evaluation (cross-entropy of this checkpoint)", "",
                  "Per-token cross-entropy as computed by `python -m lnfree_core eval` (mean over every scored "
                  "token of the sequences):", "", ce_rows_table(ce_rows)]
    return "\n".join(lines) + "\n"
