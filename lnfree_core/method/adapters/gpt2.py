"""GPT-2 (transformers' GPT2LMHeadModel): where its LayerNorms are, FakeLN surgery, export.

A stock GPT-2 block computes

    h = x + attn(ln_1(x)) ;  out = h + mlp(ln_2(h))      and after the last block   ln_f(x) @ W_U

LN removal splits ln_1 into the query/key path and the value path (paper section 3):

    q, k = LN_qk(x) @ W_qk + b_qk        v = LN_v(x) @ W_v + b_v

each with its own sigma_bar and removal step, sharing ln_1's gamma and beta. The surgery keeps the
stock module tree and the stock attention code (SDPA or eager, masks, position ids, KV cache,
generate(), gradient checkpointing all keep working): `block.ln_1` becomes an identity and
`block.attn.c_attn` becomes `SplitLNQKV`, which applies LN_qk and LN_v itself before the fused
QKV projection. `block.ln_2` and `transformer.ln_f` become FakeLayerNorm modules.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from transformers import GPT2Config, GPT2LMHeadModel

from ..fakeln import FakeLayerNorm, centred_and_std
from .base import ModelAdapter, blocks_by_kind
from .stock_export import split_fakes

# The Hub's LN-free GPT-2 exports disable LN with a huge epsilon: LN(x) ~ (x - mu) / sqrt(eps) * w + b.
EXPORT_EPS = 1e12
LNFREE_EPS_THRESHOLD = 1e6


class SplitLNQKV(nn.Module):
    """LN_qk and LN_v of one layer followed by the layer's QKV projection (a transformers Conv1D).

    Input x: [batch, pos, d_model] (the residual stream). Output: [batch, pos, 3 * d_model], laid out
    as the stock c_attn output (query | key | value), so the stock attention code consumes it.
    """

    def __init__(self, ln: nn.LayerNorm, c_attn: nn.Module, layer: int):
        super().__init__()
        self.ln_qk = FakeLayerNorm(ln.weight, ln.bias, ln.eps, name=f"qk.{layer}")
        self.ln_v = FakeLayerNorm(ln.weight, ln.bias, ln.eps, name=f"v.{layer}")
        self.proj = c_attn  # Conv1D: weight [d_model, 3 * d_model], bias [3 * d_model]
        self.d_model = ln.weight.shape[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [batch, pos, d_model]
        if torch.compiler.is_compiling():
            return self._forward_traced(x)
        if not self.ln_qk.is_removed and not self.ln_v.is_removed:
            # Both paths live: LN_qk(x) == LN_v(x), one normalisation and the stock fused projection.
            y = self.ln_qk(x)  # [batch, pos, d_model]
            self.ln_v.share_forward(self.ln_qk)
            return self.proj(y)  # [batch, pos, 3 * d_model]
        d = self.d_model
        w, b = self.proj.weight, self.proj.bias  # [d, 3d], [3d]
        y_qk = self.ln_qk(x).reshape(-1, d)  # [batch * pos, d_model]
        y_v = self.ln_v(x).reshape(-1, d)
        qk = torch.addmm(b[: 2 * d], y_qk, w[:, : 2 * d])  # [batch * pos, 2 * d_model]
        v = torch.addmm(b[2 * d :], y_v, w[:, 2 * d :])  # [batch * pos, d_model]
        return torch.cat([qk, v], dim=-1).view(*x.shape[:-1], 3 * d)

    def _forward_traced(self, x: torch.Tensor) -> torch.Tensor:  # [batch, pos, d_model]
        """The same function for torch.compile, one graph for every live/removed combination.

        The centring x - mu and the per-token sigma_{b,s} are computed once and shared by both paths;
        each path's divisor is torch.where(removed, sigma_bar, sigma_{b,s}) on the buffers, so a
        removal event changes no guard (no recompilation) and the elementwise work fuses into one kernel.
        """
        qk_ln, v_ln, d = self.ln_qk, self.ln_v, self.d_model
        xc, std = centred_and_std(x.float(), qk_ln.eps)  # [batch, pos, d], [batch, pos, 1]
        gamma, beta = qk_ln.weight.float(), qk_ln.bias.float()
        y_qk = (xc / torch.where(qk_ln.removed, qk_ln.sigma, std) * gamma + beta).reshape(-1, d)  # [batch * pos, d]
        y_v = (xc / torch.where(v_ln.removed, v_ln.sigma, std) * gamma + beta).reshape(-1, d)
        if self.training:
            qk_ln.record_forward(std.detach())
            v_ln.share_forward(qk_ln)
        w, b = self.proj.weight, self.proj.bias  # [d, 3d], [3d]
        if not torch.is_autocast_enabled():
            y_qk, y_v = y_qk.to(x.dtype), y_v.to(x.dtype)
        qk = torch.addmm(b[: 2 * d], y_qk, w[:, : 2 * d])  # [batch * pos, 2 * d_model]
        v = torch.addmm(b[2 * d :], y_v, w[:, 2 * d :])  # [batch * pos, d_model]
        return torch.cat([qk, v], dim=-1).view(*x.shape[:-1], 3 * d)


class GPT2Adapter(ModelAdapter):
    model_type = "gpt2"
    family = "GPT-2"

    # ------------------------------------------------------------------ structure
    def _base(self, model: nn.Module) -> nn.Module:
        return model.transformer if hasattr(model, "transformer") else model

    def n_layers(self, model: nn.Module) -> int:
        return len(self._base(model).h)

    def blocks(self, model: nn.Module) -> list[nn.Module]:
        return list(self._base(model).h)

    def eot_id(self, model: nn.Module) -> int:
        eos = getattr(model.config, "eos_token_id", None)
        return int(eos) if eos is not None else 50256

    def final_norm(self, model: nn.Module) -> nn.Module:
        return self._base(model).ln_f

    def unembed_weight(self, model: nn.Module) -> torch.Tensor:
        return model.lm_head.weight.T  # [d_model, vocab]

    # ------------------------------------------------------------------ surgery
    def install(self, model: nn.Module) -> dict[str, FakeLayerNorm]:
        base = self._base(model)
        if getattr(model.config, "add_cross_attention", False):
            raise ValueError("LN removal for GPT-2 with cross-attention is not supported")
        for layer, block in enumerate(base.h):
            if isinstance(block.attn.c_attn, SplitLNQKV):
                continue
            ln_1 = block.ln_1
            block.attn.c_attn = SplitLNQKV(ln_1, block.attn.c_attn, layer)
            block.ln_1 = nn.Identity()
            ln_2 = block.ln_2
            block.ln_2 = FakeLayerNorm(ln_2.weight, ln_2.bias, ln_2.eps, name=f"mlp.{layer}")
        if not isinstance(base.ln_f, FakeLayerNorm):
            ln_f = base.ln_f
            base.ln_f = FakeLayerNorm(ln_f.weight, ln_f.bias, ln_f.eps, name="f")
        return self.fakeln_modules(model)

    def fakeln_modules(self, model: nn.Module) -> dict[str, FakeLayerNorm]:
        base = self._base(model)
        return blocks_by_kind(list(base.h), (
            ("mlp", lambda b: b.ln_2),
            ("qk", lambda b: getattr(b.attn.c_attn, "ln_qk", None)),
            ("v", lambda b: getattr(b.attn.c_attn, "ln_v", None)),
        ), base.ln_f)

    # ------------------------------------------------------------------ export
    def to_stock(self, model: nn.Module, allow_live: bool = False) -> nn.Module:
        """A plain GPT2LMHeadModel computing the same logits.

        A removed block FakeLN(x) = (x - mu) / sigma_bar * gamma + beta is written as a stock LayerNorm
        with eps = 1e12 and weight gamma * sqrt(eps) / sigma_bar: (x - mu) / sqrt(var + eps) differs
        from (x - mu) / sqrt(eps) by a relative var / (2 eps), below float32 resolution for
        var < 1e5. ln_1 carries sigma_qk; when sigma_v != sigma_qk the value columns of c_attn are
        rescaled by rho = sigma_qk / sigma_v and their bias corrected by (1 - rho) * beta @ W_v, which
        is exact: LN_v(x) = rho * (LN_qk(x) - beta) + beta.
        """
        fakes = self.fakeln_modules(model)
        config = copy.deepcopy(model.config)
        if not fakes:  # never touched by the surgery (a vanilla run): already a stock model
            stock = type(model)(config)
            stock.load_state_dict(model.state_dict())
            return stock.float()
        removed = split_fakes(model, fakes, "GPT-2", allow_live)

        cfg = GPT2Config.from_dict(config.to_dict())
        if removed:
            cfg.layer_norm_epsilon = EXPORT_EPS
        stock = GPT2LMHeadModel(cfg)
        stock.to(dtype=torch.float32)
        src_base, dst_base = self._base(model), stock.transformer
        with torch.no_grad():
            # Everything but the norms and c_attn copies over by name.
            src_sd = {k: v for k, v in model.state_dict().items()}
            dst_sd = stock.state_dict()
            for key in dst_sd:
                if ".ln_" in key or key.startswith("transformer.ln_f") or ".c_attn." in key:
                    continue
                dst_sd[key].copy_(src_sd[key].float())
            for layer, (sb, db) in enumerate(zip(src_base.h, dst_base.h)):
                split: SplitLNQKV = sb.attn.c_attn
                w = split.proj.weight.float().clone()  # [d, 3d]
                b = split.proj.bias.float().clone()  # [3d]
                gamma, beta = split.ln_qk.weight.float(), split.ln_qk.bias.float()
                if removed:
                    s_qk, s_v = float(split.ln_qk.sigma), float(split.ln_v.sigma)
                    db.ln_1.weight.copy_(gamma * (EXPORT_EPS**0.5) / s_qk)
                    rho = s_qk / s_v
                    d = split.d_model
                    w_v = w[:, 2 * d :]
                    b[2 * d :] += (1.0 - rho) * (beta @ w_v)
                    w[:, 2 * d :] = w_v * rho
                else:
                    db.ln_1.weight.copy_(gamma)
                db.ln_1.bias.copy_(beta)
                db.attn.c_attn.weight.copy_(w)
                db.attn.c_attn.bias.copy_(b)
                self._copy_norm(sb.ln_2, db.ln_2, removed)
            self._copy_norm(src_base.ln_f, dst_base.ln_f, removed)
        stock.tie_weights()
        return stock

    @staticmethod
    def _copy_norm(src: FakeLayerNorm, dst: nn.LayerNorm, removed: bool) -> None:
        scale = (EXPORT_EPS**0.5) / float(src.sigma) if removed else 1.0
        dst.weight.copy_(src.weight.float() * scale)
        dst.bias.copy_(src.bias.float())

    def to_folded(self, model: nn.Module) -> nn.Module:
        # local import: interop.fold_gpt2 imports method.adapters.gpt2 at module level (cycle)
        from ...interop.fold_gpt2 import fold_gpt2

        return fold_gpt2(model)

    # ------------------------------------------------------------------ Hub LN-free exports
    def is_stock_lnfree(self, model: nn.Module) -> bool:
        if self.fakeln_modules(model):
            return False
        return float(getattr(model.config, "layer_norm_epsilon", 0.0)) >= LNFREE_EPS_THRESHOLD

    def from_stock_lnfree(self, model: nn.Module) -> dict[str, FakeLayerNorm]:
        """Turn a Hub LN-free export (eps ~ 1e12, weight w = gamma * 1e6 / sigma) into removed FakeLNs.

        Only the ratio gamma / sigma_bar is recorded in such a file, so the blocks get sigma_bar = 1
        and gamma = w / sqrt(eps): the same function, with weights of ordinary magnitude (fp16-safe).
        """
        if not self.is_stock_lnfree(model):
            raise ValueError("not a stock LN-free GPT-2 (layer_norm_epsilon is not huge)")
        base = self._base(model)
        with torch.no_grad():
            for block in base.h:
                for ln in (block.ln_1, block.ln_2):
                    ln.weight.div_(ln.eps**0.5)
            base.ln_f.weight.div_(base.ln_f.eps**0.5)
        return self.install_removed(model)

    # ------------------------------------------------------------------ analysis accessors
    def n_heads(self, model: nn.Module) -> int:
        return int(model.config.n_head)

    def attention(self, model: nn.Module, layer: int) -> nn.Module:
        return self._base(model).h[layer].attn  # GPT2Attention: forward returns (output, probs | None)

    def attn_out_proj(self, model: nn.Module, layer: int) -> nn.Module:
        return self._base(model).h[layer].attn.c_proj  # Conv1D, input z [batch, pos, n_heads * d_head]

    def attn_out_weight(self, model: nn.Module, layer: int) -> torch.Tensor:
        w = self._base(model).h[layer].attn.c_proj.weight  # Conv1D: [n_heads * d_head, d_model]
        n_heads = self.n_heads(model)
        return w.view(n_heads, w.shape[0] // n_heads, w.shape[1])  # [n_heads, d_head, d_model]

    def mlp_out_proj(self, model: nn.Module, layer: int) -> nn.Module:
        return self._base(model).h[layer].mlp.c_proj  # Conv1D, input act(c_fc(x)) [batch, pos, d_mlp]

    def mlp_out_weight(self, model: nn.Module, layer: int) -> torch.Tensor:
        return self._base(model).h[layer].mlp.c_proj.weight  # Conv1D: [d_mlp, d_model]
