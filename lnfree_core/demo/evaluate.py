"""Mean next-token cross-entropy of a demo model on a demo dataset (the build's summary numbers).

Uses the project's evaluation (:func:`lnfree_core.analysis.ce.per_token_ce`): for sequences x [n, T],
the mean over all n * (T - 1) predicted positions of -log softmax(logits[i, t])[x[i, t + 1]] in nats,
nothing masked (EOT is scored like any token), in fp32 on the model's device, eval mode.
"""

from __future__ import annotations

import numpy as np
from torch import nn

from lnfree_core.analysis.ce import per_token_ce


def mean_ce(model: nn.Module, tokens: np.ndarray, batch_size: int = 32) -> float:
    """Mean CE (nats) of ``model`` on ``tokens`` [n, T] (ids in the model's vocabulary)."""
    tokens = np.asarray(tokens)
    if tokens.size and int(tokens.max()) >= model.config.vocab_size:
        raise ValueError(f"token id {int(tokens.max())} >= the model's vocab_size {model.config.vocab_size}")
    losses = per_token_ce(model, tokens, batch_size=batch_size, precision="fp32")  # [n, T - 1]
    return float(losses.double().mean())
