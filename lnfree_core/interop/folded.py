"""The folded form of an LN-free model: no normalisation module, the residual stream real and centred.

    folded = fold_model(model)            # a FakeLN model, every block removed -> a stock transformers model
    fm = load_folded("runs/gpt2-ln-free") # a run, RUN@STEP, a checkpoint, an export or a Hub LN-free id

See fold_gpt2 for the maths. The folded model is what the TransformerLens and nnsight loaders wrap.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
from torch import nn

from ..data.tokenizer import load_gpt2_tokenizer
from ..method.adapters import adapter_for
from ..method.surgery import fakeln_modules
from ..models import load_model


@dataclass
class FoldedModel:
    model: nn.Module  # a stock transformers causal LM whose norms are nn.Identity (see fold_gpt2)
    tokenizer: object  # the model's tokenizer (a private copy: tools may change its settings)
    spec: str
    info: dict = field(default_factory=dict)  # load_model's info: sigma_bar per block, where it came from


def fold_model(model: nn.Module) -> nn.Module:
    """A model with no normalisation and the same logits as LN-free FakeLN `model` (not modified)."""
    mods = fakeln_modules(model)
    if not mods or not all(m.is_removed for m in mods.values()):
        live = [n for n, m in mods.items() if not m.is_removed]
        raise ValueError("only an LN-free model can be folded (every LayerNorm removed); "
                         + (f"{len(live)} blocks are still live (e.g. {live[:3]})" if mods else "this model has no FakeLN blocks"))
    return adapter_for(model).to_folded(model)


def tokenizer_for(spec: str, source: str):
    """The tokenizer of an export folder or Hub model; GPT-2's (bundled, offline) for runs and checkpoints."""
    name = spec if source in ("folder", "hub") else "gpt2"
    try:
        tok = load_gpt2_tokenizer(name)
    except Exception:  # a folder or repo without tokenizer files: GPT-2's, which every lnfree export uses
        tok = load_gpt2_tokenizer("gpt2")
    return copy.deepcopy(tok)


def load_folded(spec: str, *, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> FoldedModel:
    """Load `spec` with lnfree_core.models.load_model (run, RUN@STEP, checkpoint, export folder, Hub id,
    demo:...) and fold it. float32 by default; the folded weights have ordinary magnitudes, so bf16 works."""
    loaded = load_model(spec, device="cpu", dtype=torch.float32, attn_implementation="eager")
    if not loaded.ln_free:
        raise ValueError(f"{spec} is not LN-free (its LayerNorms are live): there is nothing to fold. "
                         "Load it with transformers or TransformerLens as it is.")
    folded = fold_model(loaded.model).to(device=device, dtype=dtype).eval()
    src = loaded.source if loaded.source != "demo" else "folder"
    spec_for_tok = spec if loaded.source != "demo" else "gpt2"
    return FoldedModel(folded, tokenizer_for(spec_for_tok, src), spec, dict(loaded.info))
