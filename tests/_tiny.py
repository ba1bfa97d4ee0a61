"""Tiny GPT-2 builders shared by the tests (no downloads)."""

from __future__ import annotations

import torch


def tiny_config(n_layer=2, n_embd=32, n_head=4, vocab_size=128, n_positions=64, dropout=0.0):
    from transformers import GPT2Config

    return GPT2Config(n_layer=n_layer, n_embd=n_embd, n_head=n_head, vocab_size=vocab_size,
                      n_positions=n_positions, resid_pdrop=dropout, embd_pdrop=dropout, attn_pdrop=dropout,
                      bos_token_id=vocab_size - 1, eos_token_id=vocab_size - 1)


def tiny_model(seed=0, **kw):
    from transformers import GPT2LMHeadModel

    torch.manual_seed(seed)
    return GPT2LMHeadModel(tiny_config(**kw)).eval()


def save_gpt2_vocab_pair(original, run, seed: int) -> None:
    """A tiny GPT-2 over the full GPT-2 vocabulary (50257) saved as a model folder at `original`, and the same
    weights with every FakeLN block removed at sigma_bar = 0.5 as checkpoint step 1 of the run folder `run`."""
    from lnfree_core.checkpoint import write_checkpoint
    from lnfree_core.method.surgery import fakeln_modules, fakeln_state, make_removable

    tiny_model(seed=seed, vocab_size=50257).save_pretrained(str(original))
    free = tiny_model(seed=seed, vocab_size=50257)
    make_removable(free)
    for m in fakeln_modules(free).values():
        m.remove(0.5)
    write_checkpoint(run, 1, free, None, fakeln_state(free), {"step": 1})
