"""How exact the stock ("eps trick") form of an LN-free export is on real inputs.

A stock export writes a removed block (x - mu) * gamma / sigma_bar + beta as a LayerNorm with a huge
epsilon E (1e12) and weight gamma * sqrt(E) / sigma_bar. That LayerNorm computes

    (x - mu) / sqrt(var + E) * gamma * sqrt(E) / sigma_bar = FakeLN(x) scaled by 1 / sqrt(1 + var / E)

so its relative error on the normalised part is 1 - 1/sqrt(1 + s^2/E) ~ s^2 / (2E) for a token whose
input has standard deviation s. With E = 1e12 that is below float32's half-ulp (2^-24 ~ 6e-8) while
s < ~345 ("about 300"), 5e-7 at s = 1,000 and 5e-5 at s = 10,000. `measure_input_stds` finds the
largest per-token std every block's input reaches on some evaluation sequences; the export warns when
it nears the limit and recommends the folded form (lnfree_core.interop), which has no epsilon at all.
"""

from __future__ import annotations

import torch
from torch import nn

from .method.adapters import adapter_for
from .method.fakeln import per_token_std
from .method.fakermsnorm import FakeRMSNorm, per_token_rms

EPS_TRICK_STD_LIMIT = 300.0  # per-token std where E = 1e12 stops being exact to float32 (s^2/2E ~ 4.5e-8)
PRECISION_WARN_STD = 200.0  # the export warns from here on (relative error s^2/2E >= 2e-8)


def eps_trick_relative_error(std: float, eps: float = 1e12) -> float:
    """1 - 1/sqrt(1 + std^2 / eps): the relative error of the stock form for a token with this std."""
    r = std * std / eps
    return float(r / (1.0 + r + (1.0 + r) ** 0.5))  # = 1 - (1 + r)^-1/2, written without cancellation


@torch.no_grad()
def measure_input_stds(model: nn.Module, tokens: torch.Tensor, batch_size: int = 4) -> dict[str, float]:
    """{block name: largest per-token std of the block's input} over `tokens` [n, seq] (FakeLN model).
    For an RMSNorm block the "std" is the root mean square sqrt(mean_h x_h^2), what RMSNorm adds eps to."""
    fakes = adapter_for(model).fakeln_modules(model)
    out = {name: 0.0 for name in fakes}
    handles = []

    def grab(name):
        def pre(module, args):
            # the statistic the stock norm adds eps to: the variance for LayerNorm, the mean square for RMSNorm
            stat = per_token_rms if isinstance(module, FakeRMSNorm) else per_token_std
            s = stat(args[0].float(), 0.0)  # [batch, pos, 1]
            out[name] = max(out[name], float(s.max()))
        return pre

    for name, m in fakes.items():
        handles.append(m.register_forward_pre_hook(grab(name)))
    device = next(model.parameters()).device
    try:
        model.eval()
        for i in range(0, len(tokens), batch_size):
            model(input_ids=tokens[i:i + batch_size].to(device).long(), use_cache=False)
    finally:
        for h in handles:
            h.remove()
    return out


def std_limit(eps: float, at_1e12: float = EPS_TRICK_STD_LIMIT) -> float:
    """The std where an export with epsilon `eps` has the error E = 1e12 has at `at_1e12` (s^2/E is the same):
    300 for GPT-2's 1e12, about 40,000 for the 2^54 of the GPT-NeoX and RMSNorm exports (issue 14)."""
    return at_1e12 * (eps / 1e12) ** 0.5


def precision_summary(per_block: dict[str, float], *, eps: float = 1e12, sequences: int = 0, tokens: int = 0,
                      data: str | None = None) -> dict:
    """The JSON-able record of a measurement (stored in lnfree_metadata.json as "input_std")."""
    worst = max(per_block, key=per_block.get) if per_block else None
    top = per_block[worst] if worst else 0.0
    return {"max": top, "max_block": worst, "relative_error_at_max": eps_trick_relative_error(top, eps),
            "eps": eps, "limit": std_limit(eps), "per_block": per_block, "sequences": sequences, "tokens": tokens,
            "data": data}


def precision_warning(summary: dict) -> str | None:
    """A warning when the measured stds approach the eps-trick limit, else None."""
    top = summary.get("max") or 0.0
    eps = float(summary.get("eps") or 1e12)
    if top < std_limit(eps, PRECISION_WARN_STD):
        return None
    return (f"the input of LN block {summary.get('max_block')} reaches a per-token std of {top:.4g} on "
            f"{summary.get('sequences')} evaluation sequences: the stock export (norm eps {eps:.3g}) is exact to "
            f"float32 only below a std of about {std_limit(eps):.0f}; its relative error there is about "
            f"{summary.get('relative_error_at_max'):.2g}. For exact numerics load the folded form "
            "(lnfree_core.interop.load_folded / load_transformer_lens / load_nnsight), or the FakeLN form "
            "(lnfree_core.models.load_model).")
