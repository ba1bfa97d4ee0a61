"""Fold the removed FakeLN blocks of an LN-free GPT-2 into its weights: a GPT-2 with no normalisation.

An LN-free GPT-2 (every FakeLN block removed, paper eq. 2) reads its residual stream x only through

    FakeLN(x) = (x - mu(x)) * gamma / sigma_bar + beta = (x P) * gamma / sigma_bar + beta,   P = I - 1 1^T / d

so it is affine in the centred stream x P. Folding writes that map into the weights:

  * centring: every weight that writes to the residual stream is centred over d_model, wte' = wte P,
    wpe' = wpe P, W_O' = W_O P, b_O' = b_O P, W_out' = W_out P, b_out' = b_out P. By induction the
    folded model's residual stream is x' = x P at every layer (each block's input is the same function
    of x P), so mu(x') = 0 and the mean subtraction is exact with no op in the forward pass;
  * reading: each block's gamma / sigma_bar scales the rows of the weight that reads it and beta
    becomes a bias,
        q, k = x' @ diag(gamma_1 / sigma_qk) W_qk + (beta_1 @ W_qk + b_qk)
        v    = x' @ diag(gamma_1 / sigma_v)  W_v  + (beta_1 @ W_v  + b_v)
        MLP  = x' @ diag(gamma_2 / sigma_MLP) W_in + (beta_2 @ W_in + b_in)
        logits = x' @ diag(gamma_f / sigma_f) W_U + beta_f @ W_U        (W_U = wte^T before centring)
    so lm_head gains a bias and is no longer tied to wte.

The result is a stock `transformers` GPT2LMHeadModel whose ln_1, ln_2 and ln_f are `nn.Identity` (no
LayerNorm module, nothing that divides by a per-token scale), with the same logits as the FakeLN model
to float32 rounding. It lives in memory: its module tree is GPT-2's, but `from_pretrained` would
re-create LayerNorms, so save the export (or the run) and fold again at load time.
The folding is computed in float64 and stored in float32.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from transformers import GPT2Config, GPT2LMHeadModel

from ..method.adapters.gpt2 import SplitLNQKV
from ..method.fakeln import FakeLayerNorm

FOLDED_FLAG = "lnfree_folded"  # set True on the folded model's config


def _centre(w: torch.Tensor) -> torch.Tensor:
    """Subtract the mean over the last dimension (d_model for every GPT-2 writing weight)."""
    return w - w.mean(dim=-1, keepdim=True)


@torch.no_grad()
def fold_gpt2(model: nn.Module) -> nn.Module:
    """A GPT2LMHeadModel with no normalisation computing the same logits as LN-free `model`.

    `model` is a FakeLN GPT-2 (lnfree's surgery) with every block removed; it is not modified.
    """
    base = model.transformer
    for layer, block in enumerate(base.h):
        split = block.attn.c_attn
        if not isinstance(split, SplitLNQKV) or not isinstance(block.ln_2, FakeLayerNorm):
            raise ValueError(f"layer {layer} has no FakeLN blocks: fold an LN-free model (load it with "
                             "lnfree_core.models.load_model)")
    fakes = [m for b in base.h for m in (b.attn.c_attn.ln_qk, b.attn.c_attn.ln_v, b.ln_2)] + [base.ln_f]
    live = [m.name for m in fakes if not isinstance(m, FakeLayerNorm) or not m.is_removed]
    if live:
        raise ValueError(f"cannot fold a model whose LayerNorms are not all removed (live: {live[:4]}"
                         f"{' ...' if len(live) > 4 else ''}); fold a finished LN-free run or its export")

    cfg = GPT2Config.from_dict(copy.deepcopy(model.config.to_dict()))
    cfg.tie_word_embeddings = False
    setattr(cfg, FOLDED_FLAG, True)
    folded = GPT2LMHeadModel(cfg).to(torch.float32)
    fb = folded.transformer
    d, vocab = cfg.n_embd, cfg.vocab_size
    f64 = torch.float64

    def g_over_s(norm: FakeLayerNorm) -> torch.Tensor:  # [d]
        return norm.weight.detach().to(f64) / float(norm.sigma)

    # Writing weights: centred over d_model.
    wte = base.wte.weight.detach().to(f64)  # [vocab, d]
    fb.wte.weight.copy_(_centre(wte))
    fb.wpe.weight.copy_(_centre(base.wpe.weight.detach().to(f64)))
    for layer, (sb, db) in enumerate(zip(base.h, fb.h)):
        split = sb.attn.c_attn
        w = split.proj.weight.detach().to(f64)  # Conv1D [d, 3d]: x @ w
        b = split.proj.bias.detach().to(f64)  # [3d]
        beta = split.ln_qk.bias.detach().to(f64)  # [d] (shared by LN_qk and LN_v)
        w_qk, w_v = w[:, : 2 * d], w[:, 2 * d :]
        new_w = torch.cat([g_over_s(split.ln_qk)[:, None] * w_qk, g_over_s(split.ln_v)[:, None] * w_v], dim=1)
        db.attn.c_attn.weight.copy_(new_w)
        db.attn.c_attn.bias.copy_(beta @ w + b)
        db.attn.c_proj.weight.copy_(_centre(sb.attn.c_proj.weight.detach().to(f64)))  # [d, d]: z @ W_O
        db.attn.c_proj.bias.copy_(_centre(sb.attn.c_proj.bias.detach().to(f64)))
        ln2 = sb.ln_2
        w_in, b_in = sb.mlp.c_fc.weight.detach().to(f64), sb.mlp.c_fc.bias.detach().to(f64)  # [d, 4d], [4d]
        db.mlp.c_fc.weight.copy_(g_over_s(ln2)[:, None] * w_in)
        db.mlp.c_fc.bias.copy_(ln2.bias.detach().to(f64) @ w_in + b_in)
        db.mlp.c_proj.weight.copy_(_centre(sb.mlp.c_proj.weight.detach().to(f64)))  # [4d, d]
        db.mlp.c_proj.bias.copy_(_centre(sb.mlp.c_proj.bias.detach().to(f64)))
        db.ln_1, db.ln_2 = nn.Identity(), nn.Identity()
        if getattr(sb.attn, "bias", None) is not None and getattr(db.attn, "bias", None) is not None:
            db.attn.bias.copy_(sb.attn.bias)
    fb.ln_f = nn.Identity()
    w_u = model.lm_head.weight.detach().to(f64).T  # [d, vocab], as the FakeLN model's unembedding reads it
    lm_head = nn.Linear(d, vocab, bias=True, dtype=torch.float32)
    lm_head.weight.copy_((g_over_s(base.ln_f)[:, None] * w_u).T)  # [vocab, d]
    lm_head.bias.copy_(base.ln_f.bias.detach().to(f64) @ w_u)
    folded.lm_head = lm_head
    folded.config._attn_implementation = model.config._attn_implementation
    return folded.to(next(model.parameters()).device).eval()


def is_folded(model: nn.Module) -> bool:
    """True for a model made by `fold_gpt2` (or another family's fold): no normalisation modules."""
    return bool(getattr(getattr(model, "config", None), FOLDED_FLAG, False))
