"""FakeLN: a LayerNorm whose per-token standard deviation can be frozen to a scalar.

The paper (Baroni et al. 2025, section 3) replaces each LayerNorm

    LN(x)     = (x - mu) / sigma_{b,s} * gamma + beta                                   (1)

by a FakeLN block

    FakeLN(x) = (x - mu) / sigma_bar * gamma + beta                                     (2)

    sigma_{b,s} = sqrt( 1/H * sum_h (x_{b,s,h} - mu_{b,s})^2 + eps )
    sigma_avg   = 1/(B*S) * sum_{b,s} sigma_{b,s}

where mu is the per-token mean over the model dimension H, gamma and beta stay (and stay trainable),
and only the per-token standard deviation sigma_{b,s} is replaced by one frozen scalar sigma_bar.
Mean-centering is kept, so FakeLN is affine in x: FakeLN(x) = (x @ P) * gamma / sigma_bar + beta with
P = I - 1/H the centering projection.

Life cycle of one block (see `FakeLayerNorm`):
  * live: computes exactly LayerNorm (1) with the model's eps, and during training records the
    per-token std of every call so that `sigma_avg` can be tracked once per optimizer step
    (`commit_micro_batch` / `update_sigma_avg`, driven by `lnfree_core.method.tracking.SigmaTracker`);
  * removed: at its removal event sigma_bar := sigma_avg is frozen; from then on the block is the
    affine map (2) and records nothing.

Under torch.compile the same function is traced from the buffers (`_forward_traced`): live or removed
is torch.where(removed, sigma_bar, sigma_{b,s}) on the `removed` buffer instead of a Python branch,
so a removal event changes no guard and a compiled block never recompiles for it; the eager path
keeps the fused kernels. Both compute eqs. (1)/(2) (equal up to float rounding).

The per-token statistics never update during evaluation (`module.eval()`), and are written, not
accumulated, by each forward call, so the recomputation that gradient checkpointing performs during
the backward pass does not count a micro-batch twice.
"""

from __future__ import annotations

import torch
from torch import nn


class _RemovedLNFunction(torch.autograd.Function):
    """FakeLN with a frozen scalar: y = (x - mu) * (gamma / sigma_bar) + beta (eq. 2), affine in x.

    Written as an autograd function so that it saves only x and mu for backward, as the fused
    LayerNorm kernel does (the same formula in tensor ops would keep the full-size x - mu alive).
    With g = dL/dy * gamma / sigma_bar and means over the model dimension:
        dL/dx = g - mean(g)          dL/dgamma = sum_{b,s} dL/dy * (x - mu) / sigma_bar
        dL/dbeta = sum_{b,s} dL/dy   (sigma_bar is frozen: no gradient)
    """

    @staticmethod
    def forward(ctx, x, weight, bias, sigma):  # x: [..., d_model], sigma: 0-dim
        mu = x.mean(dim=-1, keepdim=True)  # [..., 1]
        scale = weight / sigma  # [d_model]
        ctx.save_for_backward(x, mu, scale, sigma)
        return torch.addcmul(bias, x - mu, scale)

    @staticmethod
    def backward(ctx, grad_y):
        x, mu, scale, sigma = ctx.saved_tensors
        g = grad_y * scale
        grad_x = g - g.mean(dim=-1, keepdim=True)
        reduce_dims = tuple(range(grad_y.dim() - 1))
        grad_w = ((grad_y * (x - mu)).sum(dim=reduce_dims) / sigma) if ctx.needs_input_grad[1] else None
        grad_b = grad_y.sum(dim=reduce_dims) if ctx.needs_input_grad[2] else None
        return grad_x, grad_w, grad_b, None


def per_token_std(x: torch.Tensor, eps: float) -> torch.Tensor:
    """sigma_{b,s} = sqrt(Var_h(x_{b,s,h}) + eps), the divisor LayerNorm uses. [..., d] -> [..., 1]."""
    var = x.var(dim=-1, keepdim=True, correction=0)
    return torch.sqrt(var + eps)


def centred_and_std(x: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(x - mu, sigma_{b,s}) of x [..., d]: the centred input [..., d] and sqrt(Var_h + eps) [..., 1]."""
    xc = x - x.mean(dim=-1, keepdim=True)
    return xc, torch.sqrt((xc * xc).mean(dim=-1, keepdim=True) + eps)


class FakeLayerNorm(nn.Module):
    """A LayerNorm over the last dimension that can be switched to FakeLN (eq. 2) by `remove()`.

    Args:
        weight, bias: the LayerNorm's gamma and beta. Passing the same Parameters to two FakeLNs
            shares them (LN_qk and LN_v of one layer share the original ln_1's gamma and beta).
        eps: the LayerNorm's epsilon (GPT-2: 1e-5), part of sigma_{b,s}.
        name: "mlp.3", "qk.0", "v.11", "f": the block this module stands for.
        capture_std: keep the differentiable per-token std of the last call in `last_std`
            ([batch, pos]); used by the auxiliary loss at LN^f (eq. 3).

    Buffers (saved in state_dict): `removed` (bool), `sigma` (frozen sigma_bar, meaningful once
    removed), `sigma_avg` (tracked average), `sigma_avg_valid` (bool: at least one step tracked).
    """

    def __init__(self, weight: nn.Parameter, bias: nn.Parameter, eps: float, name: str, capture_std: bool = False):
        super().__init__()
        self.weight = weight
        self.bias = bias
        self.eps = float(eps)
        self.name = name
        self.capture_std = capture_std
        self.register_buffer("removed", torch.zeros((), dtype=torch.bool))
        self.register_buffer("sigma", torch.ones((), dtype=torch.float32))
        self.register_buffer("sigma_avg", torch.zeros((), dtype=torch.float32))
        self.register_buffer("sigma_avg_valid", torch.zeros((), dtype=torch.bool))
        # Statistics of the current optimizer step (not saved: a step is never split by a checkpoint).
        self._pending = None  # (sum of sigma_{b,s}, count) written by the last training forward
        self._step_sum = None  # 0-dim tensor on the forward's device (None: nothing committed this step)
        self._step_count = 0
        self.last_std = None  # [batch, pos] with grad, when capture_std
        # Python mirror of `removed` so that the hot path needs no host sync. Kept in step with the
        # buffer by remove()/load hooks; `sync_flags()` re-reads it after a state_dict load.
        self._removed_py = False
        self._avg_valid_py = False  # mirror of sigma_avg_valid (no host sync per step)
        self.register_load_state_dict_pre_hook(FakeLayerNorm._load_hook)

    # ------------------------------------------------------------------ forward
    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [batch, pos, d_model]
        if torch.compiler.is_compiling():
            return self._forward_traced(x)
        out_dtype = x.dtype
        x32 = x.float()
        if self.capture_std:  # differentiable sigma_{b,s} for the auxiliary loss (LN^f only)
            self.last_std = per_token_std(x32, self.eps).squeeze(-1)  # [batch, pos]
        if self._removed_py:
            y = _RemovedLNFunction.apply(x32, self.weight.float(), self.bias.float(), self.sigma)
        else:
            # Exact LayerNorm (1); the fused kernel also returns 1 / sigma_{b,s}, so tracking is free.
            y, _, rstd = torch.native_layer_norm(x32, (x32.shape[-1],), self.weight.float(), self.bias.float(), self.eps)
            if self.training:
                self.record_forward(1.0 / rstd.detach())  # sigma_{b,s}: [batch, pos, 1]
        return y if torch.is_autocast_enabled() else y.to(out_dtype)

    def _forward_traced(self, x: torch.Tensor) -> torch.Tensor:  # x: [batch, pos, d_model]
        """The same function for torch.compile: live or removed is read from the `removed` buffer with
        torch.where, never from a Python bool, so a removal event changes no guard and the compiled
        graph stays valid (one fused kernel for mean, variance, divisor and affine map)."""
        out_dtype = x.dtype
        xc, std = centred_and_std(x.float(), self.eps)  # [..., d], [..., 1]
        if self.capture_std:
            self.last_std = std.squeeze(-1)  # [batch, pos]
        y = xc / torch.where(self.removed, self.sigma, std) * self.weight.float() + self.bias.float()
        if self.training:
            self.record_forward(std.detach())
        return y if torch.is_autocast_enabled() else y.to(out_dtype)

    # ------------------------------------------------------------------ statistics
    def record_forward(self, std: torch.Tensor) -> None:
        """Record the per-token sigma_{b,s} ([..., 1], detached) of this training forward: its sum
        (on the device) and count, to be added to the step by `commit_micro_batch`. Written, not
        accumulated, so a recomputation under gradient checkpointing does not count twice."""
        self._pending = (std.sum(dtype=torch.float32), std.numel())

    def share_forward(self, other: "FakeLayerNorm") -> None:
        """Record the statistics `other` recorded for its last forward (the two blocks normalised the
        same input with the same sigma_{b,s}: LN_qk and LN_v while both are live)."""
        self._pending = other._pending

    def commit_micro_batch(self) -> None:
        """Add the statistics of the last training forward to the current optimizer step."""
        if self._removed_py:  # a compiled forward also measures removed blocks: nothing to track
            self._pending = None
        if self._pending is not None:
            s, n = self._pending
            self._step_sum = s if self._step_sum is None else self._step_sum + s  # stays on the device
            self._step_count += n
            self._pending = None

    def step_statistics(self) -> tuple[torch.Tensor, int]:
        """(sum of sigma_{b,s}, number of tokens) over the micro-batches committed this step."""
        s = self._step_sum if self._step_sum is not None else torch.zeros((), device=self.sigma_avg.device)
        return s, self._step_count

    def update_sigma_avg(self, step_sum: torch.Tensor, step_count, ema) -> None:
        """sigma_avg := this step's mean (ema None/0) or ema * sigma_avg + (1 - ema) * step mean.

        step_count: tokens behind step_sum, an int or a device tensor (after a cross-rank all-reduce:
        dividing on the device needs no host sync); ema: a float, or a device tensor (the token-memory
        factor of such a step, tracking.step_factor)."""
        if self._removed_py or (isinstance(step_count, int) and step_count == 0):
            self.reset_step()
            return
        mean = (step_sum / step_count).to(self.sigma_avg.dtype).to(self.sigma_avg.device)
        use_ema = ema is not None and (torch.is_tensor(ema) or ema > 0)  # no host read of a device factor
        if use_ema and self._avg_valid_py:
            self.sigma_avg.mul_(ema).add_((1.0 - ema) * mean)
        else:
            self.sigma_avg.copy_(mean)
        self.sigma_avg_valid.fill_(True)
        self._avg_valid_py = True
        self.reset_step()

    def reset_step(self) -> None:
        self._step_sum = None
        self._step_count = 0
        self._pending = None

    # ------------------------------------------------------------------ removal
    def remove(self, sigma: float | None = None) -> float:
        """Freeze sigma_bar (to `sigma`, or to the tracked sigma_avg) and become affine. Returns sigma_bar."""
        if sigma is None:
            if not self._avg_valid_py:
                raise RuntimeError(
                    f"FakeLN {self.name}: cannot remove before sigma_avg was tracked for at least one "
                    "optimizer step; schedule its removal at step >= 1."
                )
            sigma = float(self.sigma_avg)
        if not (sigma > 0 and sigma < float("inf")):
            raise ValueError(f"FakeLN {self.name}: sigma_bar must be positive and finite, got {sigma}")
        self.sigma.fill_(sigma)
        self.removed.fill_(True)
        self._removed_py = True
        self.reset_step()
        return float(sigma)

    @property
    def is_removed(self) -> bool:
        return self._removed_py

    def sync_flags(self) -> None:
        """Re-read the Python mirrors of the flags from the buffers (after loading a state dict)."""
        self._removed_py = bool(self.removed)
        self._avg_valid_py = bool(self.sigma_avg_valid)

    @staticmethod
    def _load_hook(module, state_dict, prefix, *args, **kwargs):
        if prefix + "removed" in state_dict:
            module._removed_py = bool(state_dict[prefix + "removed"])
        if prefix + "sigma_avg_valid" in state_dict:
            module._avg_valid_py = bool(state_dict[prefix + "sigma_avg_valid"])

    def divisor(self, x: torch.Tensor) -> torch.Tensor:
        """The scale this block divides by for input x: sigma_{b,s} if live, sigma_bar if removed. [..., 1]"""
        if self._removed_py:
            return self.sigma.to(x.dtype).expand(*x.shape[:-1], 1)
        return per_token_std(x.float(), self.eps).to(x.dtype)

    def extra_repr(self) -> str:
        state = f"removed, sigma_bar={float(self.sigma):.4g}" if self._removed_py else "live"
        return f"{self.name}, d={self.weight.shape[0]}, eps={self.eps:g}, {state}"


def ln_divisor(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The per-token divisor of a normalisation module for input x ([..., d] -> [..., 1]).

    Works for torch.nn.LayerNorm (sqrt(var + eps)) and FakeLayerNorm (sigma_{b,s} or sigma_bar).
    """
    if isinstance(module, FakeLayerNorm):
        return module.divisor(x)
    if isinstance(module, nn.LayerNorm):
        return per_token_std(x.float(), module.eps).to(x.dtype)
    raise TypeError(f"not a LayerNorm-like module: {type(module).__name__}")
