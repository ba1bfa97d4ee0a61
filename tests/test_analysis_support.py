"""Shared helpers for the tests of lnfree_core.analysis: tiny GPT-2 models and token arrays.

Holds no tests itself. Models are built from GPT2Config on the spot (no downloads): 2 layers, 32 wide,
4 heads, vocab 97, fp32, eval mode, dropout 0.
"""

from __future__ import annotations

import numpy as np
import torch

VOCAB = 97


def tiny_gpt2(seed: int = 0, n_layer: int = 2, n_embd: int = 32, n_head: int = 4, vocab: int = VOCAB,
              attn: str = "sdpa", ln_scale: float = 1.0):
    """A random tiny GPT2LMHeadModel. ln_scale multiplies the embeddings so residual norms vary."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    cfg = GPT2Config(n_layer=n_layer, n_embd=n_embd, n_head=n_head, vocab_size=vocab, n_positions=64,
                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=vocab - 1,
                     eos_token_id=vocab - 1)
    m = GPT2LMHeadModel(cfg)
    m.set_attn_implementation(attn)
    with torch.no_grad():
        # Larger, varied weights than the default init (std 0.02) so that LN divisors differ per token
        # and attention patterns are far from uniform.
        for name, p in m.named_parameters():
            if p.dim() >= 2:
                p.normal_(0.0, 0.3)
            elif name.endswith("bias"):
                p.normal_(0.0, 0.1)
            else:
                p.copy_(1.0 + 0.3 * torch.randn_like(p))
        m.transformer.wpe.weight.mul_(ln_scale)
    return m.eval()


def make_ln_free(model, sigma: float = 2.0, only: tuple[str, ...] | None = None):
    """FakeLN surgery, then remove every block (or only the named ones, e.g. ("f",)) with sigma_bar = sigma."""
    from lnfree_core.method.surgery import fakeln_modules, make_removable

    make_removable(model)
    for name, mod in fakeln_modules(model).items():
        if only is None or name in only:
            mod.remove(sigma)
    return model


def tokens(n: int = 6, seq_len: int = 16, seed: int = 0, vocab: int = VOCAB) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, vocab, size=(n, seq_len)).astype(np.int64)
