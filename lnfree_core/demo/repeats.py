"""Repeated-span documents for the demo's training split: text that rewards attending back to an earlier copy.

Each document is a span of L consecutive tokens of a training document (L uniform in
[``min_len``, ``max_len``], all draws seeded), written twice in a row, then EOT::

    s_1 .. s_L  s_1 .. s_L  EOT

Predicting the second copy needs a head that finds the earlier occurrence of the current token and
reads what followed it (an induction head, Olsson et al. 2022). Where a token has no earlier
occurrence such a head has nothing useful to read, and a head that must put its attention somewhere
parks it on the first position: the attention sink of section 5.3. Natural text holds such repeats
too (identifiers in code, names in prose), but too rarely for a model trained on 0.7M tokens to learn
these heads; the repeats give the demo the incentive that GPT-2 got from its 9B tokens. Spans come
from the training documents only, so no validation or Pile-like text is seen twice.
"""

from __future__ import annotations

import hashlib

import numpy as np

from lnfree_core.data.tokenizer import EOT_ID

MIN_LEN, MAX_LEN = 16, 48


def repeat_documents(docs: list[np.ndarray], n: int, seed: int, min_len: int = MIN_LEN,
                     max_len: int = MAX_LEN) -> list[np.ndarray]:
    """``n`` documents ``span span EOT`` (GPT-2 ids, int32), each span drawn from one of ``docs``.

    ``docs``: tokenized documents, each ending with EOT (as :func:`.tokens.tokenize` makes them); only
    those with at least ``max_len`` tokens before their EOT are drawn from.
    """
    if not 1 <= min_len <= max_len:
        raise ValueError(f"span lengths need 1 <= min_len <= max_len, got {min_len}, {max_len}")
    pool = [d[:-1] for d in docs if len(d) - 1 >= max_len]
    if n and not pool:
        raise ValueError(f"no training document has {max_len} tokens to draw a repeated span from")
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        d = pool[int(rng.integers(len(pool)))]
        length = int(rng.integers(min_len, max_len + 1))
        start = int(rng.integers(0, len(d) - length + 1))
        span = np.asarray(d[start:start + length], dtype=np.int32)
        out.append(np.concatenate([span, span, np.array([EOT_ID], dtype=np.int32)]))
    return out


def describe(docs: list[np.ndarray], n: int, seed: int, train_tokens: int) -> dict:
    """What the build records about the repeated spans: counts, lengths, share and SHA-256 of their tokens."""
    h = hashlib.sha256()
    for d in docs:
        h.update(np.asarray(d, dtype="<i4").tobytes())
    tokens = int(sum(len(d) for d in docs))
    return {"documents": n, "seed": seed, "span_tokens": [MIN_LEN, MAX_LEN], "tokens": tokens,
            "share_of_train_stream": tokens / max(1, train_tokens), "sha256": h.hexdigest()}
