"""GPT-NeoX / Pythia (transformers' GPTNeoXForCausalLM): LayerNorms, FakeLN surgery, exact export.

A stock GPT-NeoX layer computes, with the parallel residual of Pythia (`use_parallel_residual`),

    out = x + attn(ln_1(x)) + mlp(ln_2(x))          (sequential: h = x + attn(ln_1(x)); out = h + mlp(ln_2(h)))

with rotary position embeddings applied to q and k inside attention, and final_layer_norm before
the (untied) unembedding. ln_1 = `input_layernorm`, ln_2 = `post_attention_layernorm`.

LN removal splits ln_1 into LN_qk and LN_v (paper section 3), sharing its gamma and beta. q, k and v
come out of one fused projection `query_key_value` whose output rows are laid out per head,
[q_0 k_0 v_0 | q_1 k_1 v_1 | ...] (head_size rows each): the stock attention views its output as
[..., n_heads, 3 * head_size] and chunks it. `SplitLNFusedQKV` replaces that projection, applies LN_qk
to the q/k rows and LN_v to the v rows, and returns the stock layout, so the stock attention (rotary,
masks, SDPA/eager, KV cache, generate) is untouched. Block names: "mlp.l" (ln_2), "qk.l", "v.l", "f".
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ..fakeln import FakeLayerNorm
from .base import ModelAdapter, blocks_by_kind
from .stock_export import LinearHeads, check_exact, copy_matching, fresh_stock, norm_weight, split_fakes

# LN(x) ~ (x - mu) / sqrt(eps) * w + b with eps = 2^54 (not GPT-2's 1e12): fl32(var + 2^54) == 2^54 for
# var < 2^30 (std < 32768) and rsqrt(2^54) = 2^-27 exactly, so the stock norm is exact over a wide range
# (1e12 is bit-exact only for std < 181, which Pythia's late residual streams can exceed).
EXPORT_EPS = float(2**54)
LNFREE_EPS_THRESHOLD = 1e6


class SplitLNFusedQKV(nn.Module):
    """LN_qk and LN_v of one layer followed by GPT-NeoX's fused, per-head interleaved QKV projection.

    Input x: [batch, pos, d_model]. Output: [batch, pos, 3 * d_model] in the stock layout
    (viewed as [batch, pos, n_heads, 3 * head_size] = q | k | v per head).
    """

    def __init__(self, ln: nn.LayerNorm, proj: nn.Linear, layer: int, n_heads: int):
        super().__init__()
        self.ln_qk = FakeLayerNorm(ln.weight, ln.bias, ln.eps, name=f"qk.{layer}")
        self.ln_v = FakeLayerNorm(ln.weight, ln.bias, ln.eps, name=f"v.{layer}")
        self.proj = proj  # nn.Linear: weight [3 * d_model, d_model], bias [3 * d_model] or None
        self.n_heads = n_heads
        self.d_model = proj.in_features

    def split_weights(self) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor | None]:
        """(W_qk [n_heads, 2 * head_size, d], b_qk, W_v [n_heads, head_size, d], b_v) as views of proj."""
        h, d = self.n_heads, self.d_model
        hs = d // h
        w = self.proj.weight.view(h, 3 * hs, d)
        b = None if self.proj.bias is None else self.proj.bias.view(h, 3 * hs)
        return (w[:, : 2 * hs], None if b is None else b[:, : 2 * hs], w[:, 2 * hs :], None if b is None else b[:, 2 * hs :])

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [batch, pos, d_model]
        if not self.ln_qk.is_removed and not self.ln_v.is_removed:
            y = self.ln_qk(x)  # both live: LN_qk(x) == LN_v(x), the stock fused projection
            self.ln_v.share_forward(self.ln_qk)
            return self.proj(y)  # [batch, pos, 3 * d_model]
        h, d = self.n_heads, self.d_model
        w_qk, b_qk, w_v, b_v = self.split_weights()
        qk = F.linear(self.ln_qk(x), w_qk.reshape(-1, d), None if b_qk is None else b_qk.reshape(-1))
        v = F.linear(self.ln_v(x), w_v.reshape(-1, d), None if b_v is None else b_v.reshape(-1))
        lead = x.shape[:-1]
        out = torch.cat([qk.view(*lead, h, -1), v.view(*lead, h, -1)], dim=-1)  # [batch, pos, H, 3 * head_size]
        return out.view(*lead, 3 * d)


class GPTNeoXAdapter(LinearHeads, ModelAdapter):
    model_type = "gpt_neox"
    family = "GPT-NeoX"

    def _base(self, model: nn.Module) -> nn.Module:
        return model.gpt_neox if hasattr(model, "gpt_neox") else model

    # ------------------------------------------------------------------ structure
    def n_layers(self, model: nn.Module) -> int:
        return len(self._base(model).layers)

    def blocks(self, model: nn.Module) -> list[nn.Module]:
        return list(self._base(model).layers)

    def final_norm(self, model: nn.Module) -> nn.Module:
        return self._base(model).final_layer_norm

    def unembed_weight(self, model: nn.Module) -> torch.Tensor:
        return model.get_output_embeddings().weight.T  # [d_model, vocab]

    def eot_id(self, model: nn.Module) -> int:
        eos = getattr(model.config, "eos_token_id", None)
        return int(eos) if eos is not None else 0  # Pythia's <|endoftext|> is id 0

    # ------------------------------------------------------------------ surgery
    def install(self, model: nn.Module) -> dict[str, FakeLayerNorm]:
        base = self._base(model)
        n_heads = int(model.config.num_attention_heads)
        for layer, block in enumerate(base.layers):
            if isinstance(block.attention.query_key_value, SplitLNFusedQKV):
                continue
            block.attention.query_key_value = SplitLNFusedQKV(block.input_layernorm, block.attention.query_key_value,
                                                              layer, n_heads)
            block.input_layernorm = nn.Identity()
            ln_2 = block.post_attention_layernorm
            block.post_attention_layernorm = FakeLayerNorm(ln_2.weight, ln_2.bias, ln_2.eps, name=f"mlp.{layer}")
        if not isinstance(base.final_layer_norm, FakeLayerNorm):
            ln_f = base.final_layer_norm
            base.final_layer_norm = FakeLayerNorm(ln_f.weight, ln_f.bias, ln_f.eps, name="f")
        return self.fakeln_modules(model)

    def fakeln_modules(self, model: nn.Module) -> dict[str, FakeLayerNorm]:
        base = self._base(model)
        return blocks_by_kind(list(base.layers), (
            ("mlp", lambda b: b.post_attention_layernorm),
            ("qk", lambda b: getattr(b.attention.query_key_value, "ln_qk", None)),
            ("v", lambda b: getattr(b.attention.query_key_value, "ln_v", None)),
        ), base.final_layer_norm)

    # ------------------------------------------------------------------ export
    def to_stock(self, model: nn.Module, allow_live: bool = False) -> nn.Module:
        """A plain GPTNeoXForCausalLM with the same logits.

        Removed blocks become LayerNorms with eps = 2^54 and weight gamma * 2^27 / sigma_bar (see
        stock_export). ln_1 carries sigma_qk; when sigma_v != sigma_qk the value rows of
        query_key_value are scaled by rho = sigma_qk / sigma_v and their bias corrected by
        (1 - rho) * W_v beta, exact since LN_v(x) = rho * (LN_qk(x) - beta) + beta.
        """
        fakes = self.fakeln_modules(model)
        if not fakes:
            stock, sd = fresh_stock(model, "layer_norm_eps", None)
            copy_matching(model.state_dict(), sd, lambda k: False)
            return stock
        removed = split_fakes(model, fakes, "GPT-NeoX", allow_live)
        if removed:
            check_exact(fakes, EXPORT_EPS)
        stock, sd = fresh_stock(model, "layer_norm_eps", EXPORT_EPS if removed else None)
        src = model.state_dict()
        copy_matching(src, sd, lambda k: "layernorm" in k or "final_layer_norm" in k or "query_key_value" in k)
        base_name = "gpt_neox." if hasattr(model, "gpt_neox") else ""
        with torch.no_grad():
            for layer, block in enumerate(self._base(model).layers):
                p = f"{base_name}layers.{layer}."
                split: SplitLNFusedQKV = block.attention.query_key_value
                h, d = split.n_heads, split.d_model
                w = split.proj.weight.detach().float().clone().view(h, 3 * (d // h), d)
                has_bias = split.proj.bias is not None
                b = split.proj.bias.detach().float().clone().view(h, -1) if has_bias else None
                beta = split.ln_qk.bias.detach().float()
                if removed:
                    rho = float(split.ln_qk.sigma) / float(split.ln_v.sigma)
                    w_v = w[:, 2 * (d // h):]  # [H, head_size, d] (a view)
                    if has_bias:
                        b[:, 2 * (d // h):] += (1.0 - rho) * (w_v @ beta)
                    elif rho != 1.0 and beta.abs().max() > 0:
                        raise ValueError("cannot export: query_key_value has no bias to absorb (1 - rho) W_v beta")
                    w_v.mul_(rho)
                sd[p + "attention.query_key_value.weight"].copy_(w.view(3 * d, d))
                if has_bias:
                    sd[p + "attention.query_key_value.bias"].copy_(b.view(-1))
                sd[p + "input_layernorm.weight"].copy_(norm_weight(split.ln_qk, removed, EXPORT_EPS))
                sd[p + "input_layernorm.bias"].copy_(beta)
                ln_2 = block.post_attention_layernorm
                sd[p + "post_attention_layernorm.weight"].copy_(norm_weight(ln_2, removed, EXPORT_EPS))
                sd[p + "post_attention_layernorm.bias"].copy_(ln_2.bias.detach().float())
            ln_f = self.final_norm(model)
            sd[f"{base_name}final_layer_norm.weight"].copy_(norm_weight(ln_f, removed, EXPORT_EPS))
            sd[f"{base_name}final_layer_norm.bias"].copy_(ln_f.bias.detach().float())
        return stock

    # ------------------------------------------------------------------ Hub LN-free exports
    def is_stock_lnfree(self, model: nn.Module) -> bool:
        if self.fakeln_modules(model):
            return False
        return float(getattr(model.config, "layer_norm_eps", 0.0)) >= LNFREE_EPS_THRESHOLD

    def from_stock_lnfree(self, model: nn.Module) -> dict[str, FakeLayerNorm]:
        """A stock LN-free export (eps huge, w = gamma * sqrt(eps) / sigma) as removed FakeLN blocks with
        sigma_bar = 1 and gamma = w / sqrt(eps): the same function with weights of ordinary size."""
        if not self.is_stock_lnfree(model):
            raise ValueError("not a stock LN-free GPT-NeoX (layer_norm_eps is not huge)")
        base = self._base(model)
        with torch.no_grad():
            for block in base.layers:
                for ln in (block.input_layernorm, block.post_attention_layernorm):
                    ln.weight.div_(ln.eps**0.5)
            base.final_layer_norm.weight.div_(base.final_layer_norm.eps**0.5)
        return self.install_removed(model)

    # ------------------------------------------------------------------ analysis accessors
    def attention(self, model: nn.Module, layer: int) -> nn.Module:
        return self._base(model).layers[layer].attention  # forward returns (output, probs | None)

    def attn_out_proj(self, model: nn.Module, layer: int) -> nn.Module:
        return self._base(model).layers[layer].attention.dense  # nn.Linear, input z [batch, pos, H * d_head]


    def mlp_out_proj(self, model: nn.Module, layer: int) -> nn.Module:
        return self._base(model).layers[layer].mlp.dense_4h_to_h  # input act(dense_h_to_4h(x)) [batch, pos, d_mlp]

    def mlp_out_weight(self, model: nn.Module, layer: int) -> torch.Tensor:
        return self.mlp_out_proj(model, layer).weight.T  # [d_mlp, d_model]
