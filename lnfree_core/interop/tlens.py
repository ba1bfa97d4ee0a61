"""TransformerLens 4.x: a TransformerBridge of an LN-free model with no normalisation in its forward.

    from lnfree_core.interop import load_transformer_lens
    bridge = load_transformer_lens("path/to/export")   # or a run, checkpoint, Hub LN-free id
    logits, cache = bridge.run_with_cache(tokens)
    cache["blocks.5.hook_resid_post"]                   # the real (centred) residual stream

The bridge wraps the folded model (fold_gpt2): it is built by TransformerLens's own
`build_bridge_from_module` with the family's stock architecture adapter, whose normalisation bridges
are dropped from the component mapping (there is nothing to wrap: the model's norms are identities),
so the bridge has no LayerNorm module, no hook_scale and `cfg.normalization_type is None`. Hook names
are the bridge's usual ones (hook_embed, blocks.L.hook_resid_pre / hook_resid_mid / hook_resid_post,
blocks.L.attn.hook_z, hook_pattern, blocks.L.mlp.hook_post, ...); hook_resid_mid is the MLP's input.
TransformerLens's own decomposition tools (cache.stack_head_results, apply_ln_to_stack, which is the
identity here) give exact direct logit attribution: logits = resid_final @ W_U + b_U.
"""

from __future__ import annotations

import torch

from .folded import load_folded

TESTED_VERSION = "4.3.0"


def _drop_norms(adapter) -> None:
    """post_adapter_hook: remove every normalisation bridge from the adapter's component mapping."""
    # local: TransformerLens is optional (requirements-interop.txt); ~9.9 s to import afresh (measured)
    from transformer_lens.model_bridge.generalized_components import NormalizationBridge

    adapter.cfg.normalization_type = None
    mapping = adapter.component_mapping
    for key in [k for k, c in mapping.items() if isinstance(c, NormalizationBridge)]:
        del mapping[key]
    for comp in mapping.values():
        subs = getattr(comp, "submodules", None) or {}
        norms = [k for k, c in subs.items() if isinstance(c, NormalizationBridge)]
        for key in norms:
            del subs[key]
        if norms and "mlp" in subs:  # a block: its mid residual is the MLP's input now that ln2 is gone
            comp.hook_aliases = {**comp.hook_aliases, "hook_resid_mid": "mlp.hook_in"}
            comp.mlp_reads_resid_directly = True


def bridge_from_folded(folded, tokenizer=None, model_name: str = "lnfree-folded"):
    """A TransformerBridge around an already folded model (modified in place by the bridge)."""
    try:  # local: TransformerLens is optional (requirements-interop.txt); ~9.9 s to import afresh (measured)
        from transformer_lens.model_bridge.sources import build_bridge_from_module
    except ImportError as e:
        raise ImportError("TransformerLens 4.x is needed: pip install -r requirements-interop.txt "
                          f"(tested with transformer-lens {TESTED_VERSION})") from e
    arch = type(folded).__name__  # TransformerLens keys its architecture adapters by transformers class name
    return build_bridge_from_module(folded, arch, hf_config=folded.config, tokenizer=tokenizer,
                                    model_name=model_name, post_adapter_hook=_drop_norms)


def load_transformer_lens(spec: str, *, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32):
    """A TransformerBridge of LN-free model `spec` (run, RUN@STEP, checkpoint, export, Hub id) in folded
    form. The bridge's `lnfree_info` holds load_model's info (true sigma_bar per block and its source)."""
    fm = load_folded(spec, device=device, dtype=dtype)
    bridge = bridge_from_folded(fm.model, fm.tokenizer, model_name=spec)
    bridge.lnfree_info = fm.info
    return bridge
