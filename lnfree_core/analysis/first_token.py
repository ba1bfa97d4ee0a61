"""First-position residual norms and attention to the first token (section 5.3, Fig. 3), in one pass.

Residual points, per layer l = 0 .. L-1 (TransformerLens names; 3 L points in this order):

    resid_pre.l  = input of block l                       (resid_pre.0 = token + position embedding)
    resid_mid.l  = resid_pre.l + attention output of l    (the input of the MLP's norm in a sequential block;
                                                         with GPT-NeoX's parallel residual the MLP reads
                                                         resid_pre.l, and resid_mid.l is only this sum)
    resid_post.l = output of block l                      (= resid_pre.{l+1}; resid_post.{L-1} = LN^f input)

For sequence i, point p and position t, with x = x_{i,p,t} in R^{d_model} and two norms

    centred: || x - mean_d(x) ||_2      (the paper's Fig. 3: norms of weight-centred models, where the
                                         residual stream has no mean component; the default)
    raw:     || x ||_2

    first_norm[i, p] = norm(x_{i,p,0})        rest_norm[i, p] = 1/(T-1) sum_{t=1}^{T-1} norm(x_{i,p,t})

Attention of layer l, head h, with pattern A_{i,l,h}[query, key] (causal, rows sum to 1):

    first_attn[i, l, h]     = 1/(T-1) sum_{q=1}^{T-1} A[q, 0]           (the head's mean over queries > 0)
    sink_counts[i, l, h, k] = #{q in 0 .. T-1 : A[q, 0] > SINK_THRESHOLDS[k]}   (query 0 counted: A[0, 0] = 1)

sinks.py turns these into sink rates (the paper's per-(layer, head, query) definition from the counts,
the per-head-mean one from first_attn). The patterns come from eager attention (switched on for the
pass, then restored), in fp32 by default.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..method.adapters import adapter_for
from .hooks import eager_attention, first_input, hooks
from .runtime import Progress, analysis_inputs, autocast, iter_batches

# Thresholds tau at which sink counts are kept (0.05 .. 0.95): the paper's 0.3 and its neighbours,
# so that the threshold can change without a new forward pass.
SINK_THRESHOLDS = tuple(round(0.05 * k, 2) for k in range(1, 20))
NORM_KINDS = ("centred", "raw")


def point_names(n_layers: int) -> list[str]:
    return [f"{kind}.{l}" for l in range(n_layers) for kind in ("resid_pre", "resid_mid", "resid_post")]


@dataclass
class FirstTokenStats:
    points: list[str]  # 3 L residual points (module docstring)
    first_norm: np.ndarray  # [n, 3 L] centred norms
    rest_norm: np.ndarray  # [n, 3 L]
    first_attn: np.ndarray | None  # [n, L, H], None when attention was not captured
    first_norm_raw: np.ndarray | None = None  # [n, 3 L] raw norms
    rest_norm_raw: np.ndarray | None = None
    sink_counts: np.ndarray | None = None  # [n, L, H, len(SINK_THRESHOLDS)]
    n_queries: int = 0  # T: queries per sequence and head

    def norms(self, kind: str = "centred") -> tuple[np.ndarray, np.ndarray]:
        if kind == "centred":
            return self.first_norm, self.rest_norm
        if kind == "raw":
            return self.first_norm_raw, self.rest_norm_raw
        raise ValueError(f"norm must be one of {NORM_KINDS}, got {kind!r}")

    def profile(self, kind: str = "centred", points: tuple[str, ...] | None = None) -> dict:
        """Per point: mean first-token norm, mean norm of the other tokens, and their ratio.

        points: residual kinds to keep ("resid_pre", "resid_mid", "resid_post"); None keeps all."""
        first, rest = self.norms(kind)
        keep = [i for i, p in enumerate(self.points) if points is None or p.split(".")[0] in points]
        f, r = first[:, keep].mean(axis=0), rest[:, keep].mean(axis=0)  # [P]
        return {"points": [self.points[i] for i in keep], "norm": kind, "first": f.tolist(), "rest": r.tolist(),
                "ratio": (f / r).tolist()}


@torch.no_grad()
def first_token_stats(model: nn.Module, tokens, *, batch_size: int = 4, precision: str = "fp32",
                      attention: bool = True, progress: Progress | None = None) -> FirstTokenStats:
    """Residual norms at position 0 vs the rest at every resid_pre/mid/post point, and (attention=True)
    attention to the first token: head means over queries > 0 and sink counts per threshold."""
    tokens, device, prec = analysis_inputs(model, tokens, precision)
    ad = adapter_for(model)
    n_layers, n_heads = ad.n_layers(model), ad.n_heads(model)
    n, seq_len = tokens.shape
    model.eval()
    n_pts = 3 * n_layers
    stats = {k: torch.zeros((n, n_pts), dtype=torch.float32, device=device)
             for k in ("first_c", "rest_c", "first_r", "rest_r")}  # [n, 3 L] each
    attn0 = torch.zeros((n, n_layers, n_heads), dtype=torch.float32, device=device) if attention else None
    taus = torch.tensor(SINK_THRESHOLDS, dtype=torch.float32, device=device)  # [K]
    counts = (torch.zeros((n, n_layers, n_heads, len(SINK_THRESHOLDS)), dtype=torch.int32, device=device)
              if attention else None)
    sl = slice(0, 0)
    pre_cache: dict[int, torch.Tensor] = {}

    def record(p: int, x: torch.Tensor) -> None:  # x: [batch, pos, d_model]
        x = x.float()
        raw = x.norm(dim=-1)  # [batch, pos]
        cen = (x - x.mean(dim=-1, keepdim=True)).norm(dim=-1)  # [batch, pos]
        stats["first_r"][sl, p], stats["rest_r"][sl, p] = raw[:, 0], raw[:, 1:].mean(dim=1)
        stats["first_c"][sl, p], stats["rest_c"][sl, p] = cen[:, 0], cen[:, 1:].mean(dim=1)

    def block_pre(layer: int):
        def pre(module, args, kwargs):
            x = first_input(args, kwargs)
            pre_cache[layer] = x
            record(3 * layer, x)  # resid_pre.l
            if layer > 0:
                record(3 * (layer - 1) + 2, x)  # resid_post.{l-1}
        return pre

    def final_pre(module, args, kwargs):
        record(3 * (n_layers - 1) + 2, first_input(args, kwargs))  # resid_post.{L-1}

    def attn_post(layer: int):
        def post(module, args, kwargs, output):
            out = output[0] if isinstance(output, tuple) else output  # [batch, pos, d_model]
            record(3 * layer + 1, pre_cache.pop(layer) + out)  # resid_mid.l
            if attention:
                probs = output[1]  # [batch, head, query, key]
                if probs is None:
                    raise RuntimeError("attention probabilities were not returned; eager attention is required")
                a0 = probs[:, :, :, 0].float()  # [batch, head, query]
                attn0[sl, layer] = a0[:, :, 1:].mean(dim=-1)
                counts[sl, layer] = (a0[..., None] > taus).sum(dim=2, dtype=torch.int32)  # [batch, head, K]
        return post

    blocks = ad.blocks(model)
    pre = [(b, block_pre(l)) for l, b in enumerate(blocks)] + [(ad.final_norm(model), final_pre)]
    post = [(ad.attention(model, l), attn_post(l)) for l in range(n_layers)]
    ctx = eager_attention(model) if attention else contextlib.nullcontext()
    with ctx, hooks(pre=pre, post=post):
        for start, stop, x in iter_batches(tokens, batch_size, device, progress):
            sl = slice(start, stop)
            with autocast(prec, device):
                model(input_ids=x, use_cache=False)
            pre_cache.clear()
    host = {k: v.cpu().numpy() for k, v in stats.items()}
    return FirstTokenStats(points=point_names(n_layers), first_norm=host["first_c"], rest_norm=host["rest_c"],
                           first_attn=None if attn0 is None else attn0.cpu().numpy(),
                           first_norm_raw=host["first_r"], rest_norm_raw=host["rest_r"],
                           sink_counts=None if counts is None else counts.cpu().numpy(), n_queries=seq_len)
