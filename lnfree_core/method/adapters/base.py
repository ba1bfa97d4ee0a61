"""The interface every model-family adapter implements."""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import nn

from ..fakeln import FakeLayerNorm


class FoldingUnsupportedError(ValueError):
    """The family's adapter has no folded (normalisation-free) form."""


def blocks_by_kind(layers: list[nn.Module], getters, final: nn.Module, extra=None) -> dict[str, FakeLayerNorm]:
    """The installed FakeLN blocks by name, in the order of `ModelAdapter.fakeln_modules`: kind by kind in the
    order of `getters` ("<kind>.<layer>"), then each layer's `extra` blocks, then the final norm ("f").

    getters: (kind, get) pairs, get(layer module) -> the module holding that kind's block (a stock norm or
    None where the surgery has not run; those are left out). extra(layer, layer module) -> {name: block}."""
    out: dict[str, FakeLayerNorm] = {}
    for kind, get in getters:
        for layer, block in enumerate(layers):
            m = get(block)
            if isinstance(m, FakeLayerNorm):
                out[f"{kind}.{layer}"] = m
    if extra is not None:
        for layer, block in enumerate(layers):
            out.update(extra(layer, block))
    if isinstance(final, FakeLayerNorm):
        out["f"] = final
    return out


class ModelAdapter(ABC):
    """Architecture-specific operations for LN removal on one model family.

    Block names are "mlp.<l>", "qk.<l>", "v.<l>" and "f" (the paper's LN_MLP^l, LN_qk^l, LN_v^l, LN^f);
    a family may add blocks that follow one of them (`companions`). The blocks are FakeLayerNorm
    modules (FakeRMSNorm for RMSNorm families, a subclass with the same life cycle).
    """

    model_type: str
    family: str = ""  # human-readable family name ("GPT-2", "GPT-NeoX", "Llama", ...)

    def companions(self, name: str) -> list[str]:
        """Blocks outside the paper's four groups that are frozen at the same event as block `name`
        (Qwen3: q_norm and k_norm of layer l with LN_qk of layer l). None for most families."""
        return []

    @abstractmethod
    def n_layers(self, model: nn.Module) -> int: ...

    @abstractmethod
    def install(self, model: nn.Module) -> dict[str, FakeLayerNorm]:
        """Replace the model's LayerNorms by live FakeLN blocks in place (idempotent); return them by name."""

    @abstractmethod
    def fakeln_modules(self, model: nn.Module) -> dict[str, FakeLayerNorm]:
        """The installed FakeLN blocks by name, in the order mlp.*, qk.*, v.*, f (empty if none)."""

    @abstractmethod
    def to_stock(self, model: nn.Module, allow_live: bool = False) -> nn.Module:
        """A stock model of the family (no lnfree code needed to load it) with the same logits."""

    @abstractmethod
    def is_stock_lnfree(self, model: nn.Module) -> bool:
        """True for a stock model whose LNs are disabled the Hub's way (huge eps, rescaled weights)."""

    @abstractmethod
    def from_stock_lnfree(self, model: nn.Module) -> dict[str, FakeLayerNorm]:
        """Install FakeLN blocks into a Hub LN-free export, all removed, with the same function."""

    def install_removed(self, model: nn.Module) -> dict[str, FakeLayerNorm]:
        """Install the blocks and freeze every one at sigma_bar = 1: the last step of `from_stock_lnfree`,
        once the stock norms' weights hold gamma / sigma_bar."""
        fakes = self.install(model)
        for m in fakes.values():
            m.remove(1.0)
        return fakes

    def to_folded(self, model: nn.Module) -> nn.Module:
        """A model of the family with no normalisation module computing the same logits as LN-free
        `model`: each removed block's gamma / sigma_bar folded into the weights that read it, beta into
        their biases, and every weight that writes to the residual stream centred (lnfree_core.interop)."""
        raise FoldingUnsupportedError(
            f"folding the normalisation away is written for GPT-2 models only; for this {self.model_type} model use "
            "the FakeLN/FakeRMSNorm form (lnfree_core.models.load_model) or its stock export with transformers")

    # Accessors used by the analyses -------------------------------------------------------------
    @abstractmethod
    def blocks(self, model: nn.Module) -> list[nn.Module]:
        """The transformer blocks, in order."""

    @abstractmethod
    def final_norm(self, model: nn.Module) -> nn.Module: ...

    @abstractmethod
    def unembed_weight(self, model: nn.Module):
        """W_U as [d_model, vocab]."""

    @abstractmethod
    def eot_id(self, model: nn.Module) -> int: ...

    # Accessors used by the mechanistic analyses (lnfree_core.analysis) ---------------------------
    @abstractmethod
    def n_heads(self, model: nn.Module) -> int:
        """Attention heads per layer."""

    @abstractmethod
    def attention(self, model: nn.Module, layer: int) -> nn.Module:
        """Layer `layer`'s self-attention module. Its forward returns (output, probs) where probs is the
        attention pattern [batch, head, query, key] whenever the model runs eager attention."""

    @abstractmethod
    def attn_out_proj(self, model: nn.Module, layer: int) -> nn.Module:
        """The attention output projection: its input is the concatenated head outputs z
        [batch, pos, n_heads * d_head]; its output is sum_h z_h @ W_O^h + b_O [batch, pos, d_model]."""

    @abstractmethod
    def attn_out_weight(self, model: nn.Module, layer: int) -> torch.Tensor:
        """W_O per head as [n_heads, d_head, d_model] (head h writes z_h @ W_O[h] to the residual stream)."""

    @abstractmethod
    def mlp_out_proj(self, model: nn.Module, layer: int) -> nn.Module:
        """The MLP output projection: its input is the neuron activations [batch, pos, d_mlp]."""

    @abstractmethod
    def mlp_out_weight(self, model: nn.Module, layer: int) -> torch.Tensor:
        """W_out as [d_mlp, d_model]: row i is neuron i's output direction w_out,i."""
