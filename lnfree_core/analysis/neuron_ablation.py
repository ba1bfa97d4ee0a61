"""Mean ablation of last-layer MLP neurons: change in CE and in output entropy (appendix H, Fig. 8, 9).

Mean ablation replaces neuron i's activation a_i (the input of the MLP output projection) at every
position by its mean m_i over all positions of all sequences of the data. For the *last* MLP layer
this is exact and cheap to apply afterwards: its output is the last write to the residual stream, so
ablating a set S of its neurons changes only the final residual stream,

    r' = r + sum_{i in S} (m_i - a_i) w_out,i          r, a_i: [batch, pos(, d_model)]

and the ablated logits are LN^f(r') @ W_U. One forward pass per batch (capturing r and a_S) serves the
baseline and every ablation. Two passes over the data in all: the first computes the means m.

For each set S the result holds the mean CE and the mean entropy H = -sum_v p_v log p_v (nats) of
the output distribution over the same N predicting positions (ce.py):

    single:      S = {n_k}                  for each neuron n_k given
    cumulative:  S = {n_1, .., n_k}         k = 1 .. K (Fig. 9: relative changes of mean CE and entropy)
    delta = value(S) - baseline;  relative = delta / baseline

and, per token, the change of CE when all K neurons are ablated together (Fig. 8 box plots):

    token_delta_ce[i, t] = CE_S(i, t) - CE(i, t),   S = {n_1, .., n_K}      [n, T - 1]

whose |.| distribution `abs_delta_summary` describes (a signed mean of it cancels: a small Delta of the
mean CE can hide large per-token changes).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from ..method.adapters import adapter_for
from .ce import ce_and_entropy_from_logits
from .hooks import first_input, hooks
from .runtime import Progress, analysis_inputs, autocast, iter_batches, unembed_fp32


def _last_layer(model: nn.Module) -> int:
    return adapter_for(model).n_layers(model) - 1


def _offset(progress: Progress | None, offset: int, total: int) -> Progress | None:
    return None if progress is None else (lambda done, _n: progress(offset + done, total))


@torch.no_grad()
def mean_activations(model: nn.Module, tokens, *, batch_size: int = 4, precision: str = "fp32",
                     progress: Progress | None = None) -> torch.Tensor:
    """m [d_mlp]: each last-layer neuron's activation averaged over every position of every sequence."""
    tokens, device, prec = analysis_inputs(model, tokens, precision)
    proj = adapter_for(model).mlp_out_proj(model, _last_layer(model))
    acc: dict[str, torch.Tensor] = {}

    def pre(module, args, kwargs):
        a = first_input(args, kwargs)  # [batch, pos, d_mlp]
        s = a.double().sum(dim=(0, 1))  # [d_mlp]
        acc["sum"] = acc["sum"] + s if "sum" in acc else s

    model.eval()
    with hooks(pre=[(proj, pre)]):
        for _, _, x in iter_batches(tokens, batch_size, device, progress):
            with autocast(prec, device):
                model.base_model(input_ids=x, use_cache=False)
    return (acc["sum"] / tokens.numel()).float()


@dataclass
class AblationResult:
    neurons: list[int]
    neuron_means: list[float]
    tokens: int  # predicting positions averaged over
    baseline_ce: float
    baseline_entropy: float
    single_ce: list[float]  # [K]
    single_entropy: list[float]
    cumulative_ce: list[float]  # [K], neurons[:k+1] ablated together
    cumulative_entropy: list[float]
    token_delta_ce: np.ndarray | None = field(default=None, compare=False, repr=False)  # [n, T - 1], all K ablated

    def to_dict(self) -> dict:
        def rows(ces, ents):
            return [{"ce": c, "entropy": e, "delta_ce": c - self.baseline_ce, "delta_entropy": e - self.baseline_entropy,
                     "rel_ce": (c - self.baseline_ce) / self.baseline_ce,
                     "rel_entropy": (e - self.baseline_entropy) / self.baseline_entropy} for c, e in zip(ces, ents)]
        box = abs_delta_summary(self.token_delta_ce) if self.token_delta_ce is not None else None
        return {"neurons": self.neurons, "neuron_means": self.neuron_means, "tokens": self.tokens,
                "abs_delta_ce": box,
                "baseline": {"ce": self.baseline_ce, "entropy": self.baseline_entropy},
                "single": [{"neuron": n, **r} for n, r in zip(self.neurons, rows(self.single_ce, self.single_entropy))],
                "cumulative": [{"neurons": self.neurons[: k + 1], **r}
                               for k, r in enumerate(rows(self.cumulative_ce, self.cumulative_entropy))]}

    @classmethod
    def from_dict(cls, d: dict) -> "AblationResult":
        return cls(neurons=list(d["neurons"]), neuron_means=list(d["neuron_means"]), tokens=int(d["tokens"]),
                   baseline_ce=d["baseline"]["ce"], baseline_entropy=d["baseline"]["entropy"],
                   single_ce=[r["ce"] for r in d["single"]], single_entropy=[r["entropy"] for r in d["single"]],
                   cumulative_ce=[r["ce"] for r in d["cumulative"]],
                   cumulative_entropy=[r["entropy"] for r in d["cumulative"]])


def abs_delta_summary(delta) -> dict:
    """Box-plot numbers of |delta| over all tokens: mean, quartiles, median, 1.5 IQR whiskers (clipped to
    the data), min, max and the 2.5/97.5 percentiles (numpy's linear percentiles)."""
    v = np.abs(np.asarray(delta, dtype=np.float64)).ravel()  # [N]
    if v.size == 0:
        return {}
    q1, med, q3, p025, p975 = np.percentile(v, [25, 50, 75, 2.5, 97.5])
    iqr = q3 - q1
    lo_w = float(v[v >= q1 - 1.5 * iqr].min())
    hi_w = float(v[v <= q3 + 1.5 * iqr].max())
    return {"mean": float(v.mean()), "q1": float(q1), "median": float(med), "q3": float(q3), "whisker_lo": lo_w,
            "whisker_hi": hi_w, "min": float(v.min()), "max": float(v.max()), "p2.5": float(p025),
            "p97.5": float(p975), "tokens": int(v.size)}


@torch.no_grad()
def ablate_neurons(model: nn.Module, tokens, neurons: list[int], *, means: torch.Tensor | None = None,
                   batch_size: int = 4, precision: str = "fp32", progress: Progress | None = None) -> AblationResult:
    """Mean-ablate last-layer neurons singly and cumulatively (module docstring); `means` from
    `mean_activations` (computed here when None, as the first of two passes)."""
    tokens, device, prec = analysis_inputs(model, tokens, precision)
    neurons = [int(i) for i in neurons]
    n = tokens.shape[0]
    ad = adapter_for(model)
    last = _last_layer(model)
    passes = 2 if means is None else 1
    if means is None:
        means = mean_activations(model, tokens, batch_size=batch_size, precision=precision,
                                 progress=_offset(progress, 0, 2 * n))
    m = means.to(device, torch.float32)[neurons]  # [K]
    w = ad.mlp_out_weight(model, last).detach()[neurons].float()  # [K, d_model]
    final_norm = ad.final_norm(model)
    sets = [()] + [(i,) for i in range(len(neurons))] + [tuple(range(k + 1)) for k in range(1, len(neurons))]
    full = len(sets) - 1 if neurons else 0  # index of S = all K neurons
    token_delta = torch.zeros((n, tokens.shape[1] - 1), dtype=torch.float32, device=device)  # [n, T - 1]
    ce_sum = torch.zeros(len(sets), dtype=torch.float64, device=device)
    ent_sum = torch.zeros_like(ce_sum)
    cap: dict[str, torch.Tensor] = {}

    def grab_act(module, args, kwargs):
        cap["a"] = first_input(args, kwargs)[..., neurons].float()  # [batch, pos, K]

    def grab_resid(module, args, kwargs):
        cap["r"] = first_input(args, kwargs)  # [batch, pos, d_model]

    model.eval()
    with hooks(pre=[(ad.mlp_out_proj(model, last), grab_act), (final_norm, grab_resid)]):
        for start, stop, x in iter_batches(tokens, batch_size, device, _offset(progress, (passes - 1) * n, passes * n)):
            with autocast(prec, device):
                model.base_model(input_ids=x, use_cache=False)
            r, a = cap["r"], cap["a"]
            for j, s in enumerate(sets):
                r_s = r
                if s:
                    idx = list(s)
                    r_s = (r.float() + (m[idx] - a[..., idx]) @ w[idx]).to(r.dtype)  # [batch, pos, d_model]
                with autocast(prec, device):
                    normed = final_norm(r_s)  # [batch, pos, d_model]
                logits = unembed_fp32(model, normed)  # [batch, pos, vocab], fp32 (see runtime.fp32_logits)
                ce, ent = ce_and_entropy_from_logits(logits, x)  # [batch, pos - 1] each
                if j == 0:
                    token_delta[start:stop] = -ce
                if j == full and j > 0:
                    token_delta[start:stop] += ce
                ce_sum[j] += ce.sum(dtype=torch.float64)
                ent_sum[j] += ent.sum(dtype=torch.float64)
    n_tok = n * (tokens.shape[1] - 1)
    ce_mean, ent_mean = (ce_sum / n_tok).tolist(), (ent_sum / n_tok).tolist()
    k = len(neurons)
    single = list(range(1, 1 + k))
    cumulative = [1] + list(range(1 + k, len(sets)))  # S = {n_1} is the first single set
    return AblationResult(
        neurons=neurons, neuron_means=m.tolist(), tokens=n_tok,
        baseline_ce=ce_mean[0], baseline_entropy=ent_mean[0],
        single_ce=[ce_mean[j] for j in single], single_entropy=[ent_mean[j] for j in single],
        cumulative_ce=[ce_mean[j] for j in cumulative] if k else [],
        cumulative_entropy=[ent_mean[j] for j in cumulative] if k else [],
        token_delta_ce=token_delta.cpu().numpy() if k else None,
    )
