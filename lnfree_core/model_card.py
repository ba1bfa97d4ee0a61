"""The model card (README.md) written with every export."""

from __future__ import annotations

import json
import re
from pathlib import Path

from .rundir import METRICS_FILE, read_jsonl

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
    rows = read_jsonl(run_dir / METRICS_FILE) if run_dir else []
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


def usage_section(repo_name: str, *, ln_free: bool, input_std: dict | None = None,
                  model_type: str = "gpt2") -> list[str]:
    """The card's usage lines: transformers (float32), and for an LN-free GPT-2 the folded form in
    TransformerLens and nnsight (lnfree_core.interop, GPT-2 only so far) and the SAELens settings."""
    cls = _STOCK.get(model_type, ("AutoModelForCausalLM", None))[0]
    lines = ["```python", "import torch", f"from transformers import {cls}, AutoTokenizer",
             f'model = {cls}.from_pretrained("{repo_name}", dtype=torch.float32)',
             f'tokenizer = AutoTokenizer.from_pretrained("{repo_name}")', "```"]
    if not ln_free:
        return lines
    if model_type != "gpt2":
        return lines + ["", "Load it in float32 or bfloat16 (the rescaled norm weights underflow float16 inputs). "
                        "lnfree's loader (`lnfree_core.models.load_model`) gives the FakeLN/FakeRMSNorm form with the same "
                        "function and sigma_bar = 1 in every block (gamma / sigma_bar in the weight); each block's "
                        "true sigma_bar is recorded in `lnfree_metadata.json`."]
    lines += [
        "",
        "Load it in float32: each LayerNorm weight is gamma * 1e6 / sigma_bar, which overflows float16 "
        "(bfloat16 keeps the range but not the precision).",
    ]
    if input_std and input_std.get("max") is not None:
        lines += ["", f"The largest per-token std of any LayerNorm input measured at export was "
                  f"{input_std['max']:.4g} (block {input_std.get('max_block')}, {input_std.get('sequences')} sequences "
                  f"of {input_std.get('data')}); the epsilon trick is exact to float32 below about "
                  f"{input_std.get('limit', 300):.0f} (relative error {input_std.get('relative_error_at_max', 0):.1e} here)."]
    lines += [
        "",
        "### Without any normalisation (TransformerLens, nnsight)",
        "",
        "With lnfree installed, `lnfree_core.interop` folds the frozen FakeLN blocks into "
        "the weights (gamma / sigma_bar into the weights that read the residual stream, beta into their biases, "
        "every weight that writes to it centred): the result has no LayerNorm module and no `hook_scale`, its "
        "residual stream is the real one (centred), and direct logit attribution is exactly linear. "
        "`lnfree_metadata.json` in this repo holds every block's sigma_bar, gamma and beta.",
        "",
        "```python",
        "from lnfree_core.interop import load_transformer_lens, load_nnsight",
        "",
        "# TransformerLens 4.x: a TransformerBridge with normalization_type None",
        f'bridge = load_transformer_lens("{repo_name}")',
        'logits, cache = bridge.run_with_cache("The cat sat on the")',
        'resid = cache["blocks.5.hook_resid_post"]          # the real residual stream',
        'heads = cache.stack_head_results(layer=-1)         # [layer*head, batch, pos, d_model]',
        'dla = heads @ bridge.W_U[:, token_id]              # exact: no LayerNorm scale to freeze',
        "",
        "# nnsight: the usual GPT-2 module names (ln_1, ln_2, ln_f are identities)",
        f'lm = load_nnsight("{repo_name}")',
        'with lm.trace("The cat sat on the"):',
        "    resid = lm.transformer.h[5].output.save()      # read the residual stream after block 5",
        "    lm.transformer.h[5].output[:, -1] += steer     # patch it (steer: a [d_model] tensor)",
        "    logits = lm.lm_head.output.save()",
        "```",
        "",
        "### SAELens",
        "",
        "Hook names are TransformerLens's (`blocks.L.hook_resid_pre`, `blocks.L.hook_resid_post`, "
        "`blocks.L.hook_mlp_out`, ...), with `d_in` = the model width. Do not let SAELens load the model by name "
        "(it would rebuild the LayerNorms with the epsilon trick): give it the bridge from "
        "`load_transformer_lens` (`override_model=bridge`), or feed the bridge's activations to SAELens's "
        "trainer; `lnfree_core.interop.saelens_settings(repo_id, layer, d_model)` returns `model_name`, "
        "`hook_name`, `d_in` and an empty `model_from_pretrained_kwargs`. The residual stream is not normalised: "
        "its norm grows with depth, so normalise SAE inputs (e.g. `normalize_activations=\"expected_average_only_in\"`).",
    ]
    return lines



def render_model_card(*, repo_name: str, base_model: str | None, mode: str, schedule: dict | None,
                      run_dir=None, logit_max_abs_diff: float | None = None,
                      eval_table_md: str | None = None, input_std: dict | None = None,
                      model_type: str = "gpt2", sigmas: dict[str, float] | None = None,
                      ce_rows: list[dict] | None = None) -> str:
    """The card. `base_model` goes into the front matter only if it is a Hub id (hub_base_model);
    `sigmas`: the frozen sigma_bar of each removed block; `ce_rows`: evaluations of this checkpoint
    (used when no `eval_table_md` is given); `input_std`: the export's precision measurement."""
    s = _training_summary(run_dir)
    ln_free = mode == "ln-free"
    base_model = hub_base_model(base_model)
    cls, weights_note = _STOCK.get(model_type, ("AutoModelForCausalLM", None))
    rms = weights_note is None
    norm = "RMSNorm" if rms else "LayerNorm"
    fake = "FakeRMSNorm(x) = x / sigma_bar * gamma" if rms else "FakeLN(x) = (x - mean(x)) / sigma_bar * gamma + beta"
    lines = ["---", "library_name: transformers", "tags:", "- lnfree", f"- {model_type}"]
    if ln_free:
        lines.append("- layernorm-free")
    if hub_base_model(base_model):  # the Hub's base_model field takes Hub ids only, never a local path
        lines += ["base_model:", f"- {base_model}"]
    lines += ["---", "", f"# {repo_name}", ""]
    base_txt = f"`{base_model}`" if base_model else f"a {model_type} model (a local model, not on the Hub)"
    if ln_free:
        lines += [
            f"A LayerNorm-free version of {base_txt} made with lnfree: every {norm} was replaced, one block "
            f"at a time during fine-tuning, by {fake} with a frozen "
            "scalar sigma_bar (Baroni et al. 2025, \"Transformers Don't Need LayerNorm at Inference Time\").",
            "",
            weights_note or _RMS_NOTE,
        ]
    else:
        lines += [f"A fine-tuned {base_txt} made with lnfree ({mode} run: LayerNorm kept)."]
    lines += ["", "## Usage", ""] + usage_section(repo_name, ln_free=ln_free, input_std=input_std,
                                                  model_type=model_type) + [""]
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
