"""Confidence neurons of the last MLP layer (appendix H, eq. 11-12) and the unembedding's SVD (Fig. 7).

For neuron i of the last MLP layer with output weights w_out,i in R^{d_model} and the unembedding
W_U [d_model, vocab] with columns u_t:

    LogitVar(w) = Var_t( u_t . w / (||u_t|| ||w||) )          (11)  population variance over the vocabulary
    CN(i)       = ||w_out,i|| / LogitVar(w_out,i)                (12)

i.e. the variance over tokens of the cosine between w and each token's unembedding vector: a neuron
with a large output norm whose direction moves all logits alike scores high.

Weight processing (default on, TransformerLens' defaults as used by Stolfo et al. 2024):
  * fold_ln: W_U <- diag(gamma_f) W_U, the final norm's gain folded in (the bias beta_f only adds a
    constant logit vector);
  * center:  w_out,i <- w_out,i - mean_d(w_out,i) (the norm removes the mean direction anyway; also in
    FakeLN, which keeps mean-centering) and W_U <- W_U - mean_t(W_U) (a per-position constant added to
    all logits changes no probability). For RMSNorm families (FakeRMSNorm included) w_out is not
    centred, as in TransformerLens (center_writing_weights applies to LayerNorm models only).

SVD: W_U = U S V^T (processed), singular values S descending; reported normalised, S / S_0. The
cosine of a neuron with left singular vector j is |U[:, j] . w| / ||w|| (the sign of a singular
vector is arbitrary). U and S come from the eigendecomposition of the d_model x d_model Gram matrix
W_U W_U^T = U S^2 U^T in float64 (cheaper than an SVD of the d_model x vocab matrix, same result).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..method.adapters import adapter_for
from ..method.norm_kinds import is_rms_norm


def processed_weights(model: nn.Module, *, fold_ln: bool = True, center: bool = True
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """(W_out [d_mlp, d_model], W_U [d_model, vocab]) of the last layer, float64 on CPU, processed."""
    ad = adapter_for(model)
    last = ad.n_layers(model) - 1
    w_out = ad.mlp_out_weight(model, last).detach().to("cpu", torch.float64)  # [d_mlp, d_model]
    w_u = ad.unembed_weight(model).detach().to("cpu", torch.float64)  # [d_model, vocab]
    if fold_ln:
        gamma = ad.final_norm(model).weight.detach().to("cpu", torch.float64)  # [d_model]
        w_u = gamma[:, None] * w_u
    if center:
        if not is_rms_norm(ad.final_norm(model)):  # an RMSNorm does not remove the mean direction
            w_out = w_out - w_out.mean(dim=1, keepdim=True)
        w_u = w_u - w_u.mean(dim=1, keepdim=True)
    return w_out, w_u


@dataclass
class ConfidenceScores:
    norm: np.ndarray  # [d_mlp]  ||w_out,i||
    logit_var: np.ndarray  # [d_mlp]  eq. 11
    score: np.ndarray  # [d_mlp]  eq. 12

    def top(self, k: int) -> list[int]:
        """The k neurons with the highest CN score, highest first (ties: lower index first)."""
        return [int(i) for i in np.argsort(-self.score, kind="stable")[:k]]


def logit_var(w_out: torch.Tensor, w_u: torch.Tensor) -> torch.Tensor:
    """Eq. 11 for every row of w_out [d_mlp, d_model] against w_u [d_model, vocab] -> [d_mlp]."""
    cos = (w_out @ w_u) / (w_out.norm(dim=1, keepdim=True) * w_u.norm(dim=0, keepdim=True))  # [d_mlp, vocab]
    return cos.var(dim=1, correction=0)


def confidence_scores(model: nn.Module, *, fold_ln: bool = True, center: bool = True) -> ConfidenceScores:
    """CN scores (eq. 12) of every neuron of the last MLP layer."""
    w_out, w_u = processed_weights(model, fold_ln=fold_ln, center=center)
    norm = w_out.norm(dim=1)  # [d_mlp]
    lv = logit_var(w_out, w_u)  # [d_mlp]
    return ConfidenceScores(norm=norm.numpy(), logit_var=lv.numpy(), score=(norm / lv).numpy())


@dataclass
class UnembedSVD:
    singular_values: np.ndarray  # [d_model] S / S_0, descending
    neurons: list[int]
    cosines: np.ndarray  # [len(neurons), d_model]  |U[:, j] . w_i| / ||w_i||


def unembed_svd(model: nn.Module, neurons: list[int], *, fold_ln: bool = True, center: bool = True) -> UnembedSVD:
    """Normalised singular values of W_U and each neuron's |cosine| with the left singular vectors."""
    w_out, w_u = processed_weights(model, fold_ln=fold_ln, center=center)
    evals, evecs = torch.linalg.eigh(w_u @ w_u.T)  # ascending; W_U W_U^T = U S^2 U^T
    order = torch.argsort(evals, descending=True)
    s = evals[order].clamp_min(0).sqrt()  # [d_model]
    u = evecs[:, order]  # [d_model, d_model], column j = left singular vector j
    w = w_out[neurons]  # [k, d_model]
    cos = (w @ u).abs() / w.norm(dim=1, keepdim=True)  # [k, d_model]
    return UnembedSVD(singular_values=(s / s[0]).numpy(), neurons=list(neurons), cosines=cos.numpy())
