"""Llama (LlamaForCausalLM; SmolLM2, Llama-3.x): RMSNorms, FakeRMSNorm surgery, exact export.

A stock Llama layer is pre-norm with RMSNorm and a SwiGLU MLP:

    h = x + attn(rms_1(x)) ;  out = h + down(silu(gate(rms_2(h))) * up(rms_2(h)))   then rms_f, lm_head

with rotary embeddings on q and k inside attention, optional GQA, and tied or untied embeddings as the
config says. rms_1 = `input_layernorm`, rms_2 = `post_attention_layernorm`, rms_f = `model.norm`.

LN removal (paper section 3 with FakeRMSNorm, appendix D): rms_1 is split into LN_qk, applied before
q_proj and k_proj, and LN_v, applied before v_proj, sharing rms_1's gamma. The surgery wraps the three
projections (`NormedLinear`) and makes rms_1 an identity, keeping the stock attention code. LN_qk is
registered under q_proj; k_proj holds an unregistered reference to the same block (one block, one
sigma_bar; it is evaluated once per projection, which is the same function). Block names: "mlp.l"
(rms_2), "qk.l", "v.l", "f" (rms_f).

Export (`to_stock`): a stock model of the family with rms_norm_eps = E = 2^54 and norm weights
gamma * sqrt(E) / sigma_bar. In float32, fl(mean(x^2) + E) == E for every token whose mean square is
below ulp(E)/2 = 2^30 (RMS < 32768), and rsqrt(E) = 2^-27 is exact, so the stock norm multiplies by
exactly gamma / sigma_bar (rounded once into its weight). LN_v's sigma differs from LN_qk's: v_proj's
weight is scaled by rho = sigma_qk / sigma_v (exact: LN_v(x) = rho * LN_qk(x), no beta). The export
must run in float32 or bfloat16 (x * 2^-27 is below float16's normal range); lnfree's own loader turns
it back into FakeRMSNorm blocks, which run in any dtype.
"""

from __future__ import annotations

import torch
from torch import nn

from ..fakeln import FakeLayerNorm
from ..fakermsnorm import FakeRMSNorm
from .base import ModelAdapter, blocks_by_kind
from .stock_export import LinearHeads, check_exact, copy_matching, fresh_stock, norm_weight, split_fakes

EXPORT_EPS = float(2**54)
LNFREE_EPS_THRESHOLD = 1e6


def _eps(norm: nn.Module) -> float:
    return float(getattr(norm, "variance_epsilon", getattr(norm, "eps", 1e-6)))


class NormedLinear(nn.Module):
    """A FakeRMSNorm block followed by one of attention's input projections: proj(norm(x)).

    `owns_norm` registers the block as a submodule (its parameters and buffers are saved under this
    module); otherwise it is a reference to a block registered elsewhere (k_proj shares q_proj's LN_qk).
    """

    def __init__(self, norm: FakeRMSNorm, proj: nn.Linear, owns_norm: bool = True):
        super().__init__()
        if owns_norm:
            self.norm = norm
        else:
            self.__dict__["_shared_norm"] = (norm,)  # a tuple: nn.Module does not register it
        self.proj = proj

    @property
    def block(self) -> FakeRMSNorm:
        return self.norm if "norm" in self._modules else self.__dict__["_shared_norm"][0]

    @property
    def weight(self) -> torch.Tensor:  # code that inspects q_proj.weight (dtype checks) keeps working
        return self.proj.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [batch, pos, d_model] -> [batch, pos, out]
        return self.proj(self.block(x))


class LlamaAdapter(LinearHeads, ModelAdapter):
    model_type = "llama"
    family = "Llama"

    def _base(self, model: nn.Module) -> nn.Module:
        return model.model if hasattr(model, "model") and hasattr(model.model, "layers") else model

    # ------------------------------------------------------------------ structure
    def n_layers(self, model: nn.Module) -> int:
        return len(self._base(model).layers)

    def blocks(self, model: nn.Module) -> list[nn.Module]:
        return list(self._base(model).layers)

    def final_norm(self, model: nn.Module) -> nn.Module:
        return self._base(model).norm

    def unembed_weight(self, model: nn.Module) -> torch.Tensor:
        return model.get_output_embeddings().weight.T  # [d_model, vocab]

    def eot_id(self, model: nn.Module) -> int:
        eos = getattr(model.config, "eos_token_id", None)
        if isinstance(eos, (list, tuple)):
            eos = eos[0] if eos else None
        if eos is None:
            raise ValueError(f"{self.family} config has no eos_token_id: set it in config.json (the aux loss "
                             "needs the end-of-text id)")
        return int(eos)

    # ------------------------------------------------------------------ surgery
    def _install_extra(self, layer: int, attn: nn.Module) -> None:
        """Family-specific norms inside attention (Qwen3's q_norm / k_norm)."""

    def _extra_modules(self, layer: int, attn: nn.Module) -> dict[str, FakeLayerNorm]:
        return {}

    def install(self, model: nn.Module) -> dict[str, FakeLayerNorm]:
        base = self._base(model)
        for layer, block in enumerate(base.layers):
            attn = block.self_attn
            if not isinstance(attn.q_proj, NormedLinear):
                rms_1 = block.input_layernorm
                ln_qk = FakeRMSNorm(rms_1.weight, _eps(rms_1), name=f"qk.{layer}")
                ln_v = FakeRMSNorm(rms_1.weight, _eps(rms_1), name=f"v.{layer}")
                attn.q_proj = NormedLinear(ln_qk, attn.q_proj)
                attn.k_proj = NormedLinear(ln_qk, attn.k_proj, owns_norm=False)
                attn.v_proj = NormedLinear(ln_v, attn.v_proj)
                block.input_layernorm = nn.Identity()
                rms_2 = block.post_attention_layernorm
                block.post_attention_layernorm = FakeRMSNorm(rms_2.weight, _eps(rms_2), name=f"mlp.{layer}")
            self._install_extra(layer, attn)
        if not isinstance(base.norm, FakeLayerNorm):
            base.norm = FakeRMSNorm(base.norm.weight, _eps(base.norm), name="f")
        return self.fakeln_modules(model)

    def fakeln_modules(self, model: nn.Module) -> dict[str, FakeLayerNorm]:
        base = self._base(model)
        return blocks_by_kind(list(base.layers), (
            ("mlp", lambda b: b.post_attention_layernorm),
            ("qk", lambda b: getattr(b.self_attn.q_proj, "block", None)),
            ("v", lambda b: getattr(b.self_attn.v_proj, "block", None)),
        ), base.norm, extra=lambda layer, b: self._extra_modules(layer, b.self_attn))

    # ------------------------------------------------------------------ export
    def _stock_norm_keys(self, key: str) -> bool:
        return "layernorm" in key or key.endswith("model.norm.weight") or key == "norm.weight"

    def _export_extra(self, layer: int, attn: nn.Module, sd: dict, prefix: str, removed: bool) -> None:
        """Write family-specific norms inside attention into the stock state dict."""

    def to_stock(self, model: nn.Module, allow_live: bool = False) -> nn.Module:
        """A plain model of the same class (LlamaForCausalLM, Qwen2ForCausalLM, ...) with the same logits."""
        fakes = self.fakeln_modules(model)
        if not fakes:
            stock, sd = fresh_stock(model, "rms_norm_eps", None)
            copy_matching(model.state_dict(), sd, lambda k: False)
            return stock
        removed = split_fakes(model, fakes, self.family, allow_live)
        if removed:
            check_exact(fakes, EXPORT_EPS)
        stock, sd = fresh_stock(model, "rms_norm_eps", EXPORT_EPS if removed else None)
        src = model.state_dict()
        attn_inputs = ("self_attn.q_proj.", "self_attn.k_proj.", "self_attn.v_proj.")
        copy_matching(src, sd, lambda k: self._stock_norm_keys(k) or any(a in k for a in attn_inputs))
        base_name = "model." if self._base(model) is not model else ""
        with torch.no_grad():
            for layer, block in enumerate(self._base(model).layers):
                p = f"{base_name}layers.{layer}."
                attn = block.self_attn
                ln_qk, ln_v = attn.q_proj.block, attn.v_proj.block
                rho = float(ln_qk.sigma) / float(ln_v.sigma) if removed else 1.0
                for name, wrapped, scale in (("q_proj", attn.q_proj, 1.0), ("k_proj", attn.k_proj, 1.0),
                                             ("v_proj", attn.v_proj, rho)):
                    sd[f"{p}self_attn.{name}.weight"].copy_(wrapped.proj.weight.detach().float() * scale)
                    if wrapped.proj.bias is not None:  # bias comes after the norm: unchanged by rho
                        sd[f"{p}self_attn.{name}.bias"].copy_(wrapped.proj.bias.detach().float())
                sd[p + "input_layernorm.weight"].copy_(norm_weight(ln_qk, removed, EXPORT_EPS))
                sd[p + "post_attention_layernorm.weight"].copy_(
                    norm_weight(block.post_attention_layernorm, removed, EXPORT_EPS))
                self._export_extra(layer, attn, sd, p, removed)
            sd[f"{base_name}norm.weight"].copy_(norm_weight(self.final_norm(model), removed, EXPORT_EPS))
        return stock

    # ------------------------------------------------------------------ Hub LN-free exports
    def is_stock_lnfree(self, model: nn.Module) -> bool:
        if self.fakeln_modules(model):
            return False
        return float(getattr(model.config, "rms_norm_eps", 0.0)) >= LNFREE_EPS_THRESHOLD

    def _stock_norms(self, model: nn.Module) -> list[nn.Module]:
        base = self._base(model)
        norms = [base.norm]
        for block in base.layers:
            norms += [block.input_layernorm, block.post_attention_layernorm]
            norms += [getattr(block.self_attn, n) for n in ("q_norm", "k_norm") if hasattr(block.self_attn, n)]
        return norms

    def from_stock_lnfree(self, model: nn.Module) -> dict[str, FakeLayerNorm]:
        """A stock export (rms_norm_eps huge, w = gamma * sqrt(eps) / sigma) as removed FakeRMSNorm blocks
        with sigma_bar = 1 and gamma = w / sqrt(eps): the same function, weights of ordinary size."""
        if not self.is_stock_lnfree(model):
            raise ValueError(f"not a stock LN-free {self.family} (rms_norm_eps is not huge)")
        with torch.no_grad():
            for norm in self._stock_norms(model):
                norm.weight.div_(_eps(norm) ** 0.5)
        return self.install_removed(model)

    # ------------------------------------------------------------------ analysis accessors
    def attention(self, model: nn.Module, layer: int) -> nn.Module:
        return self._base(model).layers[layer].self_attn  # forward returns (output, probs | None)

    def attn_out_proj(self, model: nn.Module, layer: int) -> nn.Module:
        return self._base(model).layers[layer].self_attn.o_proj  # nn.Linear, input z [batch, pos, H * d_head]


    def mlp_out_proj(self, model: nn.Module, layer: int) -> nn.Module:
        return self._base(model).layers[layer].mlp.down_proj  # input silu(gate(x)) * up(x) [batch, pos, d_mlp]

    def mlp_out_weight(self, model: nn.Module, layer: int) -> torch.Tensor:
        return self.mlp_out_proj(model, layer).weight.T  # [d_mlp, d_model]
