"""First-position residual norms and attention to the first token (section 5.3), in one forward pass.

For sequence i, residual-stream point l (hooks.py: resid_pre.0 .. resid_pre.{L-1}, resid_final) and
position t, with x_{i,l,t} in R^{d_model}:

    first_norm[i, l] = || x_{i,l,0} ||_2
    rest_norm[i, l]  = 1/(T-1) sum_{t=1}^{T-1} || x_{i,l,t} ||_2

Since every sequence has T tokens, the mean of rest_norm over sequences is the mean norm over all
non-first tokens. For attention layer l and head h with pattern A_{i,l,h} [query, key] (causal,
rows sum to 1):

    first_attn[i, l, h] = 1/(T-1) sum_{q=1}^{T-1} A_{i,l,h}[q, 0]

the share of attention that the first token receives, averaged over the query positions q > 0
(query 0 can attend only to itself, A[0, 0] = 1, so it is left out). sinks.py turns it into the sink
rate. The patterns come from eager attention (switched on for the pass, then restored), in fp32 by
default.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..adapters import adapter_for
from .hooks import capture_residual, eager_attention, hooks
from .runtime import Progress, as_tokens, autocast, iter_batches, model_device, resolve_precision


@dataclass
class FirstTokenStats:
    points: list[str]  # residual points, L + 1
    first_norm: np.ndarray  # [n, L + 1]
    rest_norm: np.ndarray  # [n, L + 1]
    first_attn: np.ndarray | None  # [n, L, H], None when attention was not captured

    def profile(self) -> dict:
        """Per point: mean first-token norm, mean norm of the other tokens, and their ratio."""
        f, r = self.first_norm.mean(axis=0), self.rest_norm.mean(axis=0)  # [L + 1]
        return {"points": list(self.points), "first": f.tolist(), "rest": r.tolist(), "ratio": (f / r).tolist()}


@torch.no_grad()
def first_token_stats(model: nn.Module, tokens, *, batch_size: int = 4, precision: str = "fp32",
                      attention: bool = True, progress: Progress | None = None) -> FirstTokenStats:
    """Residual norms at position 0 vs the rest, and (attention=True) attention to the first token."""
    tokens = as_tokens(tokens)
    device = model_device(model)
    prec = resolve_precision(precision, device)
    ad = adapter_for(model)
    n_layers = ad.n_layers(model)
    n = tokens.shape[0]
    model.eval()
    first = torch.zeros((n, n_layers + 1), dtype=torch.float32, device=device)  # [n, L + 1]
    rest = torch.zeros_like(first)  # [n, L + 1]
    attn0 = torch.zeros((n, n_layers, ad.n_heads(model)), dtype=torch.float32, device=device) if attention else None
    sl = slice(0, 0)

    def on_resid(i: int, x: torch.Tensor) -> None:  # x: [batch, pos, d_model]
        norms = x.float().norm(dim=-1)  # [batch, pos]
        first[sl, i] = norms[:, 0]
        rest[sl, i] = norms[:, 1:].mean(dim=1)

    def make_attn_hook(layer: int):
        def post(module, args, kwargs, output):
            probs = output[1]  # [batch, head, query, key]
            if probs is None:
                raise RuntimeError("attention probabilities were not returned; eager attention is required")
            attn0[sl, layer] = probs[:, :, 1:, 0].float().mean(dim=-1)  # [batch, head]
        return post

    post = [(ad.attention(model, l), make_attn_hook(l)) for l in range(n_layers)] if attention else []
    ctx = eager_attention(model) if attention else contextlib.nullcontext()
    with ctx, hooks(post=post), capture_residual(model, on_resid) as points:
        for start, stop, x in iter_batches(tokens, batch_size, device, progress):
            sl = slice(start, stop)
            with autocast(prec, device):
                model(input_ids=x, use_cache=False)
    return FirstTokenStats(points=points, first_norm=first.cpu().numpy(), rest_norm=rest.cpu().numpy(),
                           first_attn=None if attn0 is None else attn0.cpu().numpy())
