"""A tokenizer over a compact vocabulary, so an exported compact-vocabulary model (the demo suite's)
loads and generates with plain ``AutoTokenizer`` + ``AutoModelForCausalLM``.

The compact vocabulary is a subset of GPT-2's (``vocab_map.json``: compact id c -> GPT-2 id
vmap[c]). GPT-2's BPE merges cannot simply be restricted to it: a compact token is usually reached
through intermediate tokens that are not in the compact vocabulary. So the tokenizer keeps GPT-2's
byte-level pre-tokenisation (same regex split, same byte-to-character map) and segments each piece
into compact tokens with a unigram model (``tokenizers.models.Unigram``, Viterbi):
  * pieces: the GPT-2 token string of vmap[c] has id c (the model's ids), score -1 - vmap[c]/(10 V),
    so the segmentation with the fewest tokens wins, ties going to tokens GPT-2 merges earlier
    (lower GPT-2 id) -- what BPE does in practice;
  * a character that no compact token spells becomes ``<|endoftext|>`` (the unknown token), never an
    id outside the model.
Decoding maps ids back through the same token strings (decode(ids) is GPT-2's decode of vmap[ids]).
On text made of compact tokens this reproduces GPT-2's tokenisation mapped to compact ids on almost
every token (the test measures it); it is another convention than BPE, stated here.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from .tokenizer import EOT_TOKEN, _bundled_bpe


def compact_pieces(vmap: np.ndarray) -> list[tuple[str, float]]:
    """[(GPT-2 token string of compact id c, its score)] in compact-id order (see module docstring)."""
    vocab, _ = _bundled_bpe()
    by_id = {i: tok for tok, i in vocab.items()}
    return [(by_id[int(g)], -1.0 - int(g) / (10 * len(vocab))) for g in vmap]


def build_compact_tokenizer(vmap: np.ndarray):
    """A transformers fast tokenizer whose ids are the compact ids of `vmap` (see module docstring)."""
    vmap = np.asarray(vmap, dtype=np.int64)
    pieces = compact_pieces(vmap)
    names = [p for p, _ in pieces]
    if EOT_TOKEN not in names:
        raise ValueError(f"the compact vocabulary has no {EOT_TOKEN}: it cannot stand for unknown text")
    tok = Tokenizer(models.Unigram(pieces, unk_id=names.index(EOT_TOKEN), byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=EOT_TOKEN, eos_token=EOT_TOKEN,
                                   unk_token=EOT_TOKEN, model_max_length=1024)


def save_compact_tokenizer(folder: str | os.PathLike, vmap: np.ndarray, model_max_length: int | None = None) -> Path:
    """Write the compact tokenizer's files (tokenizer.json, tokenizer_config.json) into `folder`."""
    tok = build_compact_tokenizer(vmap)
    if model_max_length:
        tok.model_max_length = int(model_max_length)
    tok.save_pretrained(str(folder))
    return Path(folder)
