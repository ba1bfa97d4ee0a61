"""AdamW parameter groups and the learning-rate schedule (appendix B: warmup, then cosine to min LR)."""

from __future__ import annotations

import math

import torch
from torch import nn

from .method.fakeln import FakeLayerNorm


def param_groups(model: nn.Module, weight_decay: float, decay_fakeln_gain: bool = False) -> list[dict]:
    """Weight decay on weight matrices; none on LN gamma and beta, biases or other 1-d params.

    decay_fakeln_gain: also decay the gamma of every FakeLN block (not its beta). The reference runs did
    (HF Trainer exempts biases and nn.LayerNorm weights only, and its FakeLN was no nn.LayerNorm); lnfree's
    default does not, so a LN-free run and its vanilla control decay the same parameters.
    Parameters shared between modules (ln_1's gamma in LN_qk and LN_v, tied embeddings) appear once.
    """
    gains = {id(m.weight) for m in model.modules() if isinstance(m, FakeLayerNorm)} if decay_fakeln_gain else set()
    decay, no_decay = [], []
    for _, p in model.named_parameters():  # named_parameters() yields each shared Parameter once
        if not p.requires_grad:
            continue
        (decay if p.dim() >= 2 or id(p) in gains else no_decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def make_optimizer(model: nn.Module, lr: float, weight_decay: float, betas=(0.9, 0.999),
                   decay_fakeln_gain: bool = False) -> torch.optim.AdamW:
    """AdamW over fp32 master weights (the model's parameters stay fp32; bf16 only in autocast)."""
    fused = all(p.is_cuda for p in model.parameters())
    return torch.optim.AdamW(param_groups(model, weight_decay, decay_fakeln_gain), lr=lr, betas=tuple(betas),
                             fused=fused or None)


def lr_at(step: int, lr: float, min_lr: float, warmup: int, max_steps: int) -> float:
    """LR for optimizer step `step` (0-based): linear warmup over `warmup` steps, cosine to min_lr."""
    if warmup > 0 and step < warmup:
        return lr * (step + 1) / warmup
    if max_steps <= warmup:
        return min_lr
    progress = min(1.0, (step - warmup) / max(1, max_steps - warmup))
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (lr - min_lr)
