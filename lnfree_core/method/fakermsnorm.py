"""FakeRMSNorm: an RMSNorm whose per-token root mean square can be frozen to a scalar.

RMSNorm (Llama, Qwen2, Qwen3, ...) normalises by the root mean square, with no centring and no beta:

    RMSNorm(x)     = x / sigma_{b,s} * gamma,     sigma_{b,s} = sqrt( 1/H * sum_h x_{b,s,h}^2 + eps )
    FakeRMSNorm(x) = x / sigma_bar * gamma                                                       (2')

the RMSNorm analogue of the paper's FakeLN (eq. 2, appendix D): sigma_{b,s} is replaced by one frozen
scalar sigma_bar, the average of sigma_{b,s} tracked during training exactly as for FakeLN
(sigma_avg = 1/(B*S) sum_{b,s} sigma_{b,s}, one update per optimizer step). Once removed, the block
is linear in x. Life cycle, tracking, removal and state are FakeLN's (`FakeLayerNorm`, which this
class extends); only the statistic differs (RMS instead of standard deviation).

The auxiliary loss at the final norm (eq. 3) uses the same sigma_{b,s}: the per-token RMS.
"""

from __future__ import annotations

import torch
from torch import nn

from .fakeln import FakeLayerNorm


def per_token_rms(x: torch.Tensor, eps: float) -> torch.Tensor:
    """sigma_{b,s} = sqrt(mean_h(x_{b,s,h}^2) + eps), the divisor RMSNorm uses. [..., d] -> [..., 1]."""
    return torch.sqrt(x.pow(2).mean(dim=-1, keepdim=True) + eps)


class FakeRMSNorm(FakeLayerNorm):
    """An RMSNorm over the last dimension that can be switched to FakeRMSNorm (eq. 2') by `remove()`.

    Args:
        weight: the RMSNorm's gamma (shared when the same Parameter is passed to two blocks).
        eps: the RMSNorm's epsilon (`variance_epsilon`), part of sigma_{b,s}.
        name, capture_std: as for `FakeLayerNorm`.
    """

    def __init__(self, weight: nn.Parameter, eps: float, name: str, capture_std: bool = False):
        super().__init__(weight, None, eps, name, capture_std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [..., d]
        out_dtype = x.dtype
        x32 = x.float()
        w = self.weight.float()  # [d]
        if self.capture_std:  # differentiable sigma_{b,s} for the auxiliary loss (final norm only)
            self.last_std = per_token_rms(x32, self.eps).squeeze(-1)  # [batch, pos]
        if self._removed_py:
            y = x32 * (w / self.sigma)  # linear in x: x * gamma / sigma_bar
        else:
            rstd = torch.rsqrt(x32.pow(2).mean(dim=-1, keepdim=True) + self.eps)  # [..., 1]
            y = x32 * rstd * w
            if self.training:
                self.record_forward(1.0 / rstd.detach())  # sigma_{b,s}: [..., 1]
        return y if torch.is_autocast_enabled() else y.to(out_dtype)

    def divisor(self, x: torch.Tensor) -> torch.Tensor:
        """sigma_{b,s} (RMS) if live, sigma_bar if removed. [..., d] -> [..., 1]"""
        if self._removed_py:
            return self.sigma.to(x.dtype).expand(*x.shape[:-1], 1)
        return per_token_rms(x.float(), self.eps).to(x.dtype)
