"""The auxiliary loss of the paper (eq. 3), applied at the input of LN^f.

    L_aux = lambda * E_{b,s}[(sigma_{b,s} - sigma_hat)^2],
    sigma_hat = mean of sigma_{b,s} over M = {(b, s): s != 0 and token_{b,s} != EOT}, detached.

The loss is taken over all positions; only the target excludes position 0 and end-of-text tokens,
whose residual norms are consistently larger in GPT-2.
"""

from __future__ import annotations

import torch


def aux_loss(sigma: torch.Tensor, input_ids: torch.Tensor, eot_id: int, weight: float) -> torch.Tensor:
    """sigma: [batch, pos] per-token std at LN^f's input (with grad); input_ids: [batch, pos]."""
    mask = torch.ones_like(input_ids, dtype=torch.bool)  # [batch, pos]
    mask[:, 0] = False
    mask &= input_ids != eot_id
    sigma32 = sigma.float()
    m = mask.to(sigma32.dtype)
    # Mean over M without a host sync; falls back to all positions if M is empty.
    n = m.sum()
    target = torch.where(n > 0, (sigma32 * m).sum() / n.clamp(min=1), sigma32.mean()).detach()
    return weight * ((sigma32 - target) ** 2).mean()
