"""Direct logit attribution (DLA) vs direct effect (DE) of every attention head (section 5.1, app. G).

For a final residual stream r (input of the final norm LN^f, [d_model] per position), a component
output c (head h's write to the residual stream, c = z_h @ W_O^h; the output bias b_O belongs to no
head) and the unembedding column u_y of the correct next token y:

    DE(c)  = ( LN(r) - LN(r - c) ) . u_y                                                  (4)
    DLA(c) = LN_cached(c) . u_y,   LN_cached(c) = (c - mean(c)) / s(r) * gamma             (5)

LN(x) = (x - mean(x)) / s(x) * gamma + beta with s(x) the norm's divisor (norm_divisor: sqrt(var+eps)
for a live LayerNorm or FakeLN block, the frozen sigma_bar for a removed one). For RMSNorm families
(Llama, Qwen) the same with no centring and no beta: LN(x) = x / s(x) * gamma, s = sqrt(mean(x^2)+eps),
and LN_cached(c) = c / s(r) * gamma. DLA freezes s at its
value s(r) for the full residual: a linearisation. When LN^f is removed s is a constant, LN is affine,
and DE = DLA exactly: beta cancels and (r - mu_r) - (r - c - mu_{r-c}) = c - mu_c.

Values are computed per token for the predictions t = 0 .. T-2 (target y = x_{t+1}, as in ce.py), in
float64 after the forward pass, so the difference in (4) does not lose precision, and reduced per
sequence i, layer l, head h:

    dla[i, l, h] = 1/(T-1) sum_t DLA_t        de[i, l, h] = 1/(T-1) sum_t DE_t
    abs_err[i, l, h] = sum_t |DLA_t - DE_t|   abs_de[i, l, h] = sum_t |DE_t|

and at the last predicting position only (t = T-2, the next-token prediction a prompt ends with):

    dla_last[i, l, h] = DLA_{T-2}             de_last[i, l, h] = DE_{T-2}

(nmae.py turns these into eq. 9 and 10.) Option center_unembed: u_y is replaced by the centred column
u_y - 1/V sum_t u_t (TransformerLens' center_unembed): DLA and DE of a logit minus the mean logit, the
part of a logit that softmax sees. Off by default (the paper's DLA/DE use the raw W_U).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..method.adapters import adapter_for
from ..method.norm_kinds import apply_norm as _apply_norm, centre, norm_divisor
from .hooks import first_input, hooks
from .runtime import Progress, analysis_inputs, autocast, iter_batches


@dataclass
class HeadAttribution:
    dla: np.ndarray  # [n, L, H]  per-sequence mean DLA of the correct-token logit
    de: np.ndarray  # [n, L, H]  per-sequence mean DE
    abs_err: np.ndarray  # [n, L, H]  per-sequence sum over positions of |DLA - DE|
    abs_de: np.ndarray  # [n, L, H]  per-sequence sum over positions of |DE|
    positions: int  # predicting positions per sequence (T - 1)
    dla_last: np.ndarray | None = None  # [n, L, H]  DLA at the last predicting position
    de_last: np.ndarray | None = None  # [n, L, H]  DE at the last predicting position


def apply_norm(norm: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """LN(x) = (x - mean(x)) / s(x) * gamma + beta in x's dtype (float64 allowed). [..., d] -> [..., d].
    For an RMSNorm family: x / s(x) * gamma (no centring, no beta), see norm_kinds."""
    return _apply_norm(norm, x)


@torch.no_grad()
def head_attribution(model: nn.Module, tokens, *, batch_size: int = 4, precision: str = "fp32",
                     center_unembed: bool = False, progress: Progress | None = None) -> HeadAttribution:
    """DLA and DE (eq. 4, 5) of every attention head for the correct next token, per sequence."""
    tokens, device, prec = analysis_inputs(model, tokens, precision)
    ad = adapter_for(model)
    n_layers, n_heads = ad.n_layers(model), ad.n_heads(model)
    n, seq_len = tokens.shape
    norm = ad.final_norm(model)
    w_u = ad.unembed_weight(model).detach()  # [d_model, vocab]
    if center_unembed:
        w_u = w_u.double() - w_u.double().mean(dim=1, keepdim=True)
    w_o = [ad.attn_out_weight(model, l).detach().double() for l in range(n_layers)]  # [H, d_head, d_model] each
    gamma = norm.weight.detach().double()  # [d_model]
    out = {k: torch.zeros((n, n_layers, n_heads), dtype=torch.float64, device=device)
           for k in ("dla", "de", "abs_err", "abs_de", "dla_last", "de_last")}
    cap: dict = {}

    def grab_z(layer):
        def pre(module, args, kwargs):
            cap[layer] = first_input(args, kwargs)  # [batch, pos, H * d_head]
        return pre

    def grab_r(module, args, kwargs):
        cap["r"] = first_input(args, kwargs)  # [batch, pos, d_model]

    pre = [(ad.attn_out_proj(model, l), grab_z(l)) for l in range(n_layers)] + [(norm, grab_r)]
    model.eval()
    with hooks(pre=pre):
        for start, stop, x in iter_batches(tokens, batch_size, device, progress):
            with autocast(prec, device):
                model.base_model(input_ids=x, use_cache=False)
            r = cap["r"][:, :-1].double()  # [batch, pos - 1, d_model]
            u_y = w_u.T[x[:, 1:]].double()  # [batch, pos - 1, d_model]
            logit = (apply_norm(norm, r) * u_y).sum(-1)  # [batch, pos - 1]
            s_r = norm_divisor(norm, r)  # [batch, pos - 1, 1]
            for l in range(n_layers):
                z = cap[l][:, :-1].double()  # [batch, pos - 1, H * d_head]
                z = z.view(*z.shape[:2], n_heads, -1)  # [batch, pos - 1, H, d_head]
                c = torch.einsum("bthk,hkd->bthd", z, w_o[l])  # [batch, pos - 1, H, d_model]
                uy = u_y[:, :, None, :]  # [batch, pos - 1, 1, d_model]
                dla = (centre(norm, c) / s_r[:, :, None] * gamma * uy).sum(-1)  # [batch, pos - 1, H]
                de = logit[:, :, None] - (apply_norm(norm, r[:, :, None] - c) * uy).sum(-1)  # [batch, pos - 1, H]
                out["dla"][start:stop, l] = dla.mean(1)
                out["de"][start:stop, l] = de.mean(1)
                out["abs_err"][start:stop, l] = (dla - de).abs().sum(1)
                out["abs_de"][start:stop, l] = de.abs().sum(1)
                out["dla_last"][start:stop, l] = dla[:, -1]
                out["de_last"][start:stop, l] = de[:, -1]
            cap.clear()
    return HeadAttribution(**{k: v.cpu().numpy() for k, v in out.items()}, positions=seq_len - 1)
