"""What kind of normalisation a module is (LayerNorm or RMSNorm, live or frozen), and how to apply it.

The analyses need a final norm's divisor and its formula for any family:

    LayerNorm-like:  N(x) = (x - mean(x)) / s(x) * gamma + beta      s = sqrt(var(x) + eps) or sigma_bar
    RMSNorm-like:    N(x) = x / s(x) * gamma                          s = sqrt(mean(x^2) + eps) or sigma_bar

Recognised modules: torch.nn.LayerNorm, FakeLayerNorm, FakeRMSNorm, and the stock RMSNorm classes of
transformers (any module named *RMSNorm with a `weight` and a `variance_epsilon` or `eps`), which
compute x * rsqrt(mean(x^2) + eps) * weight.
"""

from __future__ import annotations

import torch
from torch import nn

from .fakeln import FakeLayerNorm, per_token_std
from .fakermsnorm import FakeRMSNorm, per_token_rms


def _stock_rms_eps(module: nn.Module) -> float | None:
    if not type(module).__name__.endswith("RMSNorm"):
        return None
    eps = getattr(module, "variance_epsilon", getattr(module, "eps", None))
    return None if eps is None else float(eps)


def is_rms_norm(module: nn.Module) -> bool:
    """True for FakeRMSNorm and stock *RMSNorm modules (no centring, no beta)."""
    return isinstance(module, FakeRMSNorm) or (
        not isinstance(module, (FakeLayerNorm, nn.LayerNorm)) and _stock_rms_eps(module) is not None)


def norm_divisor(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The per-token divisor s(x) of a normalisation module for input x ([..., d] -> [..., 1])."""
    if isinstance(module, FakeLayerNorm):  # FakeLN and FakeRMSNorm: live statistic or frozen sigma_bar
        return module.divisor(x)
    if isinstance(module, nn.LayerNorm):
        return per_token_std(x.float(), module.eps).to(x.dtype)
    eps = _stock_rms_eps(module)
    if eps is not None:
        return per_token_rms(x.float(), eps).to(x.dtype)
    raise TypeError(f"not a LayerNorm- or RMSNorm-like module: {type(module).__name__}")


def centre(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """x - mean(x) for a LayerNorm-like module, x itself for an RMSNorm-like one. [..., d]"""
    return x if is_rms_norm(module) else x - x.mean(dim=-1, keepdim=True)


def apply_norm(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """N(x) with the module's own divisor, in x's dtype (float64 allowed). [..., d] -> [..., d]"""
    y = centre(module, x) / norm_divisor(module, x) * module.weight.to(x.dtype)
    bias = getattr(module, "bias", None)
    return y if bias is None else y + bias.to(x.dtype)
