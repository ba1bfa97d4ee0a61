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


# model_type: (stock class, what the export's norms are)
_STOCK = {
    "gpt2": ("GPT2LMHeadModel", "The weights are a stock GPT-2 checkpoint: each LayerNorm has epsilon 1e12 and weight "
             "gamma * 1e6 / sigma_bar, which makes it the affine map above to float32 precision. Keep the model "
             "in float32 (the rescaled LayerNorm weights overflow float16)."),
    "gpt_neox": ("GPTNeoXForCausalLM", "The weights are a stock GPT-NeoX checkpoint: each LayerNorm has epsilon 2^54 "
                 "and weight gamma * 2^27 / sigma_bar, which makes it the affine map above in float32 for every token "
                 "with variance below 2^30. Run it in float32 or bfloat16 (not float16)."),
    "llama": ("LlamaForCausalLM", None), "qwen2": ("Qwen2ForCausalLM", None), "qwen3": ("Qwen3ForCausalLM", None),
}
_RMS_NOTE = ("The weights are a stock checkpoint of the family: each RMSNorm (FakeRMSNorm x / sigma_bar * gamma "
             "while training) has epsilon 2^54 and weight gamma * 2^27 / sigma_bar, which makes it the linear map "
             "x * gamma / sigma_bar in float32 for every token with mean square below 2^30. Run it in float32 or "
             "bfloat16 (not float16).")


def render_model_card(*, repo_name: str, base_model: str | None, mode: str, schedule: dict | None,
                      run_dir=None, logit_max_abs_diff: float | None = None,
                      eval_table_md: str | None = None, model_type: str = "gpt2") -> str:
    s = _training_summary(run_dir)
    ln_free = mode == "ln-free"
    cls, weights_note = _STOCK.get(model_type, ("AutoModelForCausalLM", None))
    rms = weights_note is None
    norm = "RMSNorm" if rms else "LayerNorm"
    fake = "FakeRMSNorm(x) = x / sigma_bar * gamma" if rms else "FakeLN(x) = (x - mean(x)) / sigma_bar * gamma + beta"
    lines = ["---", "library_name: transformers", "tags:", "- lnfree", f"- {model_type}"]
    if ln_free:
        lines.append("- layernorm-free")
    if base_model:
        lines += ["base_model:", f"- {base_model}"]
    lines += ["---", "", f"# {repo_name}", ""]
    if ln_free:
        lines += [
            f"A LayerNorm-free version of `{base_model}` made with lnfree: every {norm} was replaced, one block "
            f"at a time during fine-tuning, by {fake} with a frozen "
            "scalar sigma_bar (Baroni et al. 2025, \"Transformers Don't Need LayerNorm at Inference Time\").",
            "",
            weights_note or _RMS_NOTE,
        ]
    else:
        lines += [f"A fine-tuned `{base_model}` made with lnfree ({mode} run: LayerNorm kept)."]
    lines += ["", "## Usage", "", "```python", f"from transformers import {cls}, AutoTokenizer",
              f'model = {cls}.from_pretrained("{repo_name}")',
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
