"""nnsight: an LN-free model in folded form, wrapped with its usual transformers module names.

    from lnfree_core.interop import load_nnsight
    lm = load_nnsight("path/to/export")        # or a run, checkpoint, Hub LN-free id
    with lm.trace(tokens):
        resid = lm.transformer.h[5].output.save()          # read: residual stream after block 5
        lm.transformer.h[5].output[:, -1] += steer         # patch: add a vector at the last position
        logits = lm.lm_head.output.save()

The wrapped model is the folded GPT2LMHeadModel (fold_gpt2): transformer.wte / wpe / h[L].attn /
h[L].mlp / lm_head as in any GPT-2, with ln_1, ln_2 and ln_f identities, so a block's output is the
real residual stream (centred) and nothing downstream rescales a patch. nnsight >= 0.8 recommends
`TransformersModel`; `LanguageModel` (its deprecated alias) wraps the same model.
"""

from __future__ import annotations

import torch

from .folded import load_folded

TESTED_VERSION = "0.8.1"


def nnsight_from_folded(folded, tokenizer):
    """An nnsight model around an already folded model."""
    try:  # local: nnsight is optional (requirements-interop.txt); ~5.3 s to import afresh (measured)
        from nnsight import TransformersModel as Wrapper
    except ImportError:
        try:  # local: the same, for nnsight < 0.8
            from nnsight import LanguageModel as Wrapper
        except ImportError as e:
            raise ImportError("nnsight is needed: pip install -r requirements-interop.txt "
                              f"(tested with nnsight {TESTED_VERSION})") from e
    return Wrapper(folded, tokenizer=tokenizer, task="text-generation")


def load_nnsight(spec: str, *, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32):
    """An nnsight model of LN-free model `spec` (run, RUN@STEP, checkpoint, export, Hub id) in folded form.
    Its `lnfree_info` holds load_model's info (true sigma_bar per block and its source)."""
    fm = load_folded(spec, device=device, dtype=dtype)
    lm = nnsight_from_folded(fm.model, fm.tokenizer)
    lm.__dict__["lnfree_info"] = fm.info
    return lm
