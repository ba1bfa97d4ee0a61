"""Overconfidence of next-token predictions (sections 5.4 and 6.1): entropy vs cross-entropy, a
reliability diagram and the expected calibration error.

Per predicting position (i, t), with p = softmax(logits[i, t]) and target y = x[i, t + 1] (ce.py):

    CE[i, t]   = -log p_y                         (nats)
    H[i, t]    = -sum_v p_v log p_v               entropy of the prediction (nats)
    conf[i, t] = max_v p_v                        confidence of the top token
    hit[i, t]  = [argmax_v p_v == y]              whether the top token is right

A calibrated model has E[H] = E[CE] (its expected loss under its own distribution equals the loss it
incurs); mean H below mean CE means it is more confident than it is right: overconfident. The paper
reports that every LN-free model is (section 6.1) and that ablating the top confidence neurons of a
vanilla model brings its entropy to the LN-free model's but not its CE (appendix H); that check uses
neuron_ablation.py through cached.confidence_eval.

Reliability diagram: the positions are put in n_bins equal-width bins of conf over [0, 1] (bin m
holds lo_m < conf <= hi_m, the first bin also conf = 0); per bin the mean confidence, the accuracy
(mean hit) and the count. Expected calibration error (Guo et al. 2017):

    ECE = sum_m (n_m / N) |acc_m - conf_m|
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .runtime import Progress, analysis_inputs, fp32_logits, iter_batches

DEFAULT_BINS = 15


@dataclass
class TokenCalibration:
    ce: np.ndarray  # [n, T-1] float32
    entropy: np.ndarray  # [n, T-1] float32
    confidence: np.ndarray  # [n, T-1] float32
    correct: np.ndarray  # [n, T-1] bool


@torch.no_grad()
def token_calibration(model: nn.Module, tokens, *, batch_size: int = 8, precision: str = "auto",
                      progress: Progress | None = None) -> TokenCalibration:
    """CE, entropy, top-token confidence and correctness of every next-token prediction (module docstring)."""
    tokens, device, prec = analysis_inputs(model, tokens, precision)
    model.eval()
    n, T = tokens.shape
    out = {k: torch.empty((n, T - 1), dtype=torch.float32, device=device) for k in ("ce", "entropy", "confidence")}
    hit = torch.empty((n, T - 1), dtype=torch.bool, device=device)
    for start, stop, x in iter_batches(tokens, batch_size, device, progress):
        logits = fp32_logits(model, x, prec, device)[:, :-1]  # [b, T-1, vocab] float32
        logp = torch.log_softmax(logits, dim=-1)
        y = x[:, 1:]
        out["ce"][start:stop] = -logp.gather(-1, y[..., None]).squeeze(-1)
        out["entropy"][start:stop] = -(logp.exp() * logp).sum(-1)
        top, arg = logp.max(dim=-1)
        out["confidence"][start:stop] = top.exp()
        hit[start:stop] = arg == y
        del logits, logp
    return TokenCalibration(ce=out["ce"].cpu().numpy(), entropy=out["entropy"].cpu().numpy(),
                            confidence=out["confidence"].cpu().numpy(), correct=hit.cpu().numpy())


@dataclass
class Reliability:
    edges: np.ndarray  # [n_bins + 1]
    count: np.ndarray  # [n_bins]
    confidence: np.ndarray  # [n_bins] mean confidence (nan for an empty bin)
    accuracy: np.ndarray  # [n_bins] mean hit (nan for an empty bin)
    ece: float

    def to_dict(self) -> dict:
        def clean(a):
            return [None if not np.isfinite(v) else float(v) for v in a]
        return {"edges": self.edges.tolist(), "count": self.count.astype(int).tolist(),
                "confidence": clean(self.confidence), "accuracy": clean(self.accuracy), "ece": self.ece}


def reliability(confidence, correct, n_bins: int = DEFAULT_BINS) -> Reliability:
    """Reliability diagram and ECE of top-token confidences and hits (module docstring)."""
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    conf = np.asarray(confidence, dtype=np.float64).ravel()
    hit = np.asarray(correct, dtype=np.float64).ravel()
    if conf.size == 0 or conf.size != hit.size:
        raise ValueError("confidence and correct must be non-empty and of the same size")
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, n_bins - 1)  # lo < conf <= hi
    count = np.bincount(idx, minlength=n_bins).astype(np.float64)
    csum = np.bincount(idx, weights=conf, minlength=n_bins)
    hsum = np.bincount(idx, weights=hit, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mc, acc = csum / count, hsum / count
    filled = count > 0
    ece = float(np.sum(count[filled] / conf.size * np.abs(acc[filled] - mc[filled])))
    return Reliability(edges=edges, count=count, confidence=mc, accuracy=acc, ece=ece)


@dataclass
class CalibrationSummary:
    tokens: int
    mean_ce: float
    mean_entropy: float
    gap: float  # mean CE - mean entropy (> 0: overconfident)
    mean_confidence: float
    accuracy: float
    ece: float

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def summarize_calibration(cal: TokenCalibration, n_bins: int = DEFAULT_BINS) -> CalibrationSummary:
    ce = np.asarray(cal.ce, dtype=np.float64)
    h = np.asarray(cal.entropy, dtype=np.float64)
    return CalibrationSummary(tokens=int(ce.size), mean_ce=float(ce.mean()), mean_entropy=float(h.mean()),
                              gap=float(ce.mean() - h.mean()),
                              mean_confidence=float(np.asarray(cal.confidence, dtype=np.float64).mean()),
                              accuracy=float(np.asarray(cal.correct, dtype=np.float64).mean()),
                              ece=reliability(cal.confidence, cal.correct, n_bins).ece)
