"""LN-free models that interpretability tools take as they are: no normalisation in the forward pass.

An lnfree export is a stock GPT-2 whose LayerNorms have eps 1e12 and weight gamma * 1e6 / sigma_bar:
exact in transformers, but every tool still sees LayerNorms (hook_scale reads 1e6, sigma_bar and
gamma are hidden in the LN weight, sigma_v in W_V). Here the removed FakeLN blocks are folded into the
weights instead (fold_gpt2: gamma / sigma_bar into the reading weights, beta into their biases, every
writing weight centred so the mean subtraction is exact), giving a model with no normalisation module
whose residual stream is the real one, centred. One entry point per tool; each accepts a run
directory (RUN@STEP for a step), a checkpoint, an export folder or a Hub LN-free id:

    fold_model(model)              FakeLN model -> folded transformers model (no LayerNorm module)
    load_folded(spec)              -> FoldedModel(model, tokenizer, spec, info)
    load_transformer_lens(spec)    -> transformer_lens TransformerBridge, normalization_type None,
                                      no hook_scale (TransformerLens 4.x)
    load_nnsight(spec)             -> nnsight TransformersModel over the folded GPT-2 (usual names)
    saelens_settings(spec, layer)  -> the SAELens settings for an SAE on the LN-free model

TransformerLens and nnsight are optional: `pip install -r requirements-interop.txt` (tested versions).
Keep the stock export in float32 (its rescaled LN weights overflow float16); the folded form has
ordinary weights and runs in any dtype.
"""

from __future__ import annotations

from .fold_gpt2 import is_folded
from .folded import FoldedModel, fold_model, load_folded
from .nnsight_model import load_nnsight, nnsight_from_folded
from .tlens import bridge_from_folded, load_transformer_lens

RESID_SITES = ("hook_resid_pre", "hook_resid_mid", "hook_resid_post", "hook_mlp_out", "hook_attn_out")


def saelens_settings(model_id: str, layer: int, d_model: int, site: str = "hook_resid_pre") -> dict:
    """What SAELens needs to train or load an SAE on LN-free `model_id` at `blocks.{layer}.{site}`.

    SAELens names hook points as TransformerLens does; the folded bridge has the same names, so an SAE
    is keyed the usual way. SAELens's own loader would build the model from its name with LayerNorms
    (the stock export's eps trick); give it the folded bridge instead (`override_model`, or the
    bridge's activations through SAELens's data-provider API). Returned keys are the
    LanguageModelSAERunnerConfig fields that matter here.
    """
    if site not in RESID_SITES:
        raise ValueError(f"site must be one of {RESID_SITES}, got {site!r}")
    return {
        "model_name": model_id,
        "hook_name": f"blocks.{int(layer)}.{site}",
        "d_in": int(d_model),
        # the folded bridge replaces SAELens's own model loading: nothing to pass to from_pretrained
        "model_from_pretrained_kwargs": {},
        "prepend_bos": True,
        "dtype": "float32",
    }


__all__ = ["FoldedModel", "RESID_SITES", "bridge_from_folded", "fold_model", "is_folded", "load_folded",
           "load_nnsight", "load_transformer_lens", "nnsight_from_folded", "saelens_settings"]
