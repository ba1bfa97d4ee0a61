"""The model card (README.md) written with every export."""

from __future__ import annotations

from .runlog import read_jsonl


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


def hub_base_model(base_model: str | None) -> str | None:
    """`base_model` as the card's YAML `base_model:` entry, which the Hub resolves to a repo: only a Hub
    repo id (owner/name or name) qualifies; a demo name (demo:original) or a local path does not."""
    import re
    from pathlib import Path

    if not base_model or ":" in base_model or base_model.startswith((".", "/", "~")) or Path(base_model).exists():
        return None
    return base_model if re.fullmatch(r"[\w.-]+(/[\w.-]+)?", base_model) else None


def render_model_card(*, repo_name: str, base_model: str | None, mode: str, schedule: dict | None,
                      run_dir=None, logit_max_abs_diff: float | None = None,
                      eval_table_md: str | None = None) -> str:
    s = _training_summary(run_dir)
    ln_free = mode == "ln-free"
    lines = ["---", "library_name: transformers", "tags:", "- lnfree", "- gpt2"]
    if ln_free:
        lines.append("- layernorm-free")
    if hub_base_model(base_model):
        lines += ["base_model:", f"- {hub_base_model(base_model)}"]
    lines += ["---", "", f"# {repo_name}", ""]
    if ln_free:
        lines += [
            f"A LayerNorm-free version of `{base_model}` made with lnfree: every LayerNorm was replaced, one block "
            "at a time during fine-tuning, by FakeLN(x) = (x - mean(x)) / sigma_bar * gamma + beta with a frozen "
            "scalar sigma_bar (Baroni et al. 2025, \"Transformers Don't Need LayerNorm at Inference Time\").",
            "",
            "The weights are a stock GPT-2 checkpoint: each LayerNorm has epsilon 1e12 and weight "
            "gamma * 1e6 / sigma_bar, which makes it the affine map above to float32 precision. Keep the model "
            "in float32 (the rescaled LayerNorm weights overflow float16).",
        ]
    else:
        lines += [f"A fine-tuned `{base_model}` made with lnfree ({mode} run: LayerNorm kept)."]
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
    if logit_max_abs_diff is not None:
        lines += ["", f"Export check: max |logit difference| to the FakeLN model = {logit_max_abs_diff:.2e} (float32)."]
    if eval_table_md:
        lines += ["", "## Evaluation (mean cross-entropy)", "", eval_table_md]
    return "\n".join(lines) + "\n"
