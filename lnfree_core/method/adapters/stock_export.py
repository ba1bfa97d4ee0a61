"""Shared steps of the exact stock export for the adapters of GPT-NeoX and the RMSNorm families (and the
refusal of partly removed or live models, which GPT-2's export shares).

A removed block N(x) = c(x) / sigma_bar * gamma (+ beta) is written as a stock norm of the family with
a huge epsilon E and weight gamma * sqrt(E) / sigma_bar: the stock divisor sqrt(m(x) + E), with m the
variance (LayerNorm) or the mean square (RMSNorm), then equals sqrt(E) up to a relative m / (2E).
In float32, fl(m + E) is exactly E whenever m < ulp(E) / 2, so for those tokens the stock norm is the
frozen one up to the rounding of its weight (`exact_below`).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..fakeln import FakeLayerNorm


def exact_below(eps: float) -> float:
    """The largest m with fl32(m + eps) == eps: half a float32 ulp of eps."""
    e = torch.tensor(eps, dtype=torch.float32)
    return float((torch.nextafter(e, torch.tensor(float("inf"))) - e) / 2)


def split_fakes(model: nn.Module, fakes: dict[str, FakeLayerNorm], family: str, allow_live: bool) -> bool:
    """Refuse partly removed models (one eps for all norms), and live ones unless allow_live.

    Returns True when every block is removed (export with the huge epsilon)."""
    removed = [n for n, m in fakes.items() if m.is_removed]
    live = [n for n, m in fakes.items() if not m.is_removed]
    if live and removed:
        raise ValueError(
            f"cannot export a partly LN-free model as a stock {family}: {len(removed)} blocks removed, "
            f"{len(live)} live (e.g. {live[:3]}). A stock {family} has one norm epsilon for all its norms. "
            "Export a run whose schedule has finished, or an earlier checkpoint with no removed block."
        )
    if live and not allow_live:
        raise ValueError(
            "this model still has all its norms live (no block was removed): exporting it would publish an "
            f"ordinary fine-tuned {family}. Pass allow_live=True (CLI: --allow-live) if that is what you want."
        )
    return bool(removed)


def check_exact(fakes: dict[str, FakeLayerNorm], eps: float) -> None:
    """Refuse when a removed block's typical scale sigma_bar^2 reaches the exactness bound of `eps`."""
    bound = exact_below(eps)
    bad = {n: float(m.sigma) for n, m in fakes.items() if float(m.sigma) ** 2 >= bound}
    if bad:
        raise ValueError(
            f"cannot export exactly: blocks {sorted(bad)[:4]} have sigma_bar^2 >= {bound:.3g}, where a stock norm "
            f"with eps = {eps:g} no longer reproduces the frozen divisor in float32. Keep the FakeLN checkpoint."
        )


def norm_weight(fake: FakeLayerNorm, removed: bool, eps: float) -> torch.Tensor:
    """gamma * sqrt(E) / sigma_bar for a removed block (gamma when exported live)."""
    gamma = fake.weight.detach().float()
    return gamma * (eps**0.5) / float(fake.sigma) if removed else gamma.clone()


def fresh_stock(model: nn.Module, eps_attr: str, eps: float | None) -> tuple[nn.Module, dict]:
    """A fresh stock model of the same class and config (eps_attr := eps when given), float32, and its
    state dict to fill."""
    config = copy.deepcopy(model.config)
    if eps is not None:
        setattr(config, eps_attr, eps)
    stock = type(model)(config).to(dtype=torch.float32)
    return stock, stock.state_dict()


def copy_matching(src_sd: dict, dst_sd: dict, skip) -> None:
    """Copy every destination key that the source has under the same name, unless skip(key)."""
    for key, dst in dst_sd.items():
        if not skip(key) and key in src_sd:
            dst.copy_(src_sd[key].float())


class LinearHeads:
    """Head accessors of the families whose attention output is an nn.Linear (GPT-NeoX, Llama, Qwen)."""

    def n_heads(self, model: nn.Module) -> int:
        return int(model.config.num_attention_heads)

    def attn_out_weight(self, model: nn.Module, layer: int) -> torch.Tensor:
        w = self.attn_out_proj(model, layer).weight  # nn.Linear: [d_model, H * d_head]
        h = self.n_heads(model)
        return w.T.reshape(h, w.shape[1] // h, w.shape[0])  # [H, d_head, d_model]
