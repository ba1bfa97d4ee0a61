"""Model-family adapters: everything architecture-specific about LN removal lives in one adapter.

An adapter knows, for one family of Hugging Face models, where the normalisation layers are, how to
replace them by FakeLN blocks (`install`), how to turn a FakeLN model back into a stock model of the
family (`to_stock`), and how to recognise the Hub's LN-free exports. Implemented: GPT-2, GPT-NeoX
(Pythia), and the RMSNorm families Llama, Qwen2 and Qwen3 (FakeRMSNorm). Another family is added by
writing one more module and registering it here.
"""

from __future__ import annotations

from torch import nn

from .base import ModelAdapter
from .gpt2 import GPT2Adapter
from .gpt_neox import GPTNeoXAdapter
from .llama import LlamaAdapter
from .qwen2 import Qwen2Adapter
from .qwen3 import Qwen3Adapter

ADAPTERS: dict[str, ModelAdapter] = {a.model_type: a for a in (
    GPT2Adapter(), GPTNeoXAdapter(), LlamaAdapter(), Qwen2Adapter(), Qwen3Adapter())}


def adapter_for(model: nn.Module) -> ModelAdapter:
    """The adapter for `model` (by `model.config.model_type`), with a clear error if there is none."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type not in ADAPTERS:
        raise ValueError(
            f"lnfree has no adapter for model type {model_type!r}; supported: {sorted(ADAPTERS)}. "
            "Add one in lnfree_core/method/adapters/ (see base.py)."
        )
    return ADAPTERS[model_type]


def family_of(model_type: str | None) -> str | None:
    """The family name of a `config.model_type` ("gpt_neox" -> "GPT-NeoX"), None if unsupported."""
    ad = ADAPTERS.get(model_type or "")
    return ad.family if ad else None


__all__ = ["ADAPTERS", "ModelAdapter", "adapter_for", "family_of"]
