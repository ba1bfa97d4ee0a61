"""High-loss samples (appendix E.1): rank sequences, list per-token losses, find the first blow-up.

Conventions (see ce.py): `losses` [n, T-1] with losses[i, t] the CE of predicting token t+1 of
sequence i. A token at position p >= 1 therefore carries losses[i, p-1]; position 0 carries none
("N/A", as in the paper's listings).

* `rank_sequences`: sequences by their mean or their max token CE, highest first.
* `token_losses`: one row per token: position, id, decoded text, its `unicode_escape` form
  (control characters such as "\\x0c" and "\\t" become visible) and its CE.
* `first_exceeding`: the first token whose CE exceeds a threshold (strictly; default 50 nats) and
  the `context` (default 5) tokens before it, i.e. the end of the prefix the prediction was made from.
* `compare_token_losses`: two models on the same tokens, with diff = loss_b - loss_a per token.

Tokens are decoded one at a time by `decode(list_of_ids) -> str` (e.g. a tokenizer's `decode`), so a
byte-level BPE token that is part of a multi-byte character decodes to U+FFFD.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np

Decode = Callable[[list[int]], str]
DEFAULT_THRESHOLD = 50.0
DEFAULT_CONTEXT = 5


def escape(text: str) -> str:
    """`text` with non-printable and non-ASCII characters as Python escapes: "\\x0c", "\\n", "\\xa0"."""
    return text.encode("unicode_escape").decode("ascii")


@dataclass(frozen=True)
class RankedSequence:
    index: int
    score: float  # the ranking key: mean or max
    mean: float
    max: float
    argmax_position: int  # position (in tokens) of the highest-loss token

    def to_dict(self) -> dict:
        return asdict(self)


def rank_sequences(losses, by: str = "mean", k: int | None = None) -> list[RankedSequence]:
    """Sequences sorted by mean or max token CE, highest first (ties: lower index first)."""
    if by not in ("mean", "max"):
        raise ValueError(f"by must be 'mean' or 'max', got {by!r}")
    lv = np.asarray(losses, dtype=np.float64)  # [n, T-1]
    means, maxes = lv.mean(axis=1), lv.max(axis=1)  # [n], [n]
    arg = lv.argmax(axis=1) + 1  # loss column t belongs to token position t + 1
    score = means if by == "mean" else maxes
    order = np.argsort(-score, kind="stable")[: (k if k is not None else len(score))]
    return [RankedSequence(int(i), float(score[i]), float(means[i]), float(maxes[i]), int(arg[i])) for i in order]


def sequences_exceeding(losses, threshold: float = DEFAULT_THRESHOLD) -> np.ndarray:
    """Indices of sequences with at least one token CE > threshold, ascending."""
    return np.flatnonzero((np.asarray(losses) > threshold).any(axis=1))


@dataclass(frozen=True)
class TokenLoss:
    position: int
    token_id: int
    text: str
    escaped: str
    loss: float | None  # None at position 0 (nothing predicts the first token)

    def to_dict(self) -> dict:
        return asdict(self)


def _loss_at(losses: np.ndarray, position: int) -> float | None:
    return None if position == 0 else float(losses[position - 1])


def token_losses(tokens, losses, decode: Decode) -> list[TokenLoss]:
    """Per-token rows of one sequence: tokens [T], losses [T-1]."""
    tok = np.asarray(tokens).ravel()
    lv = np.asarray(losses, dtype=np.float64).ravel()
    if lv.size != tok.size - 1:
        raise ValueError(f"{tok.size} tokens need {tok.size - 1} losses, got {lv.size}")
    rows = []
    for p, t in enumerate(tok.tolist()):
        text = decode([t])
        rows.append(TokenLoss(p, int(t), text, escape(text), _loss_at(lv, p)))
    return rows


@dataclass(frozen=True)
class Exceedance:
    position: int
    token_id: int
    text: str
    escaped: str
    loss: float
    context_ids: list[int]  # the `context` tokens before `position`
    context_text: str
    context_escaped: str

    def to_dict(self) -> dict:
        return asdict(self)


def first_exceeding(tokens, losses, decode: Decode, threshold: float = DEFAULT_THRESHOLD,
                    context: int = DEFAULT_CONTEXT) -> Exceedance | None:
    """The first token of a sequence whose CE exceeds `threshold`, or None."""
    tok = np.asarray(tokens).ravel()
    lv = np.asarray(losses, dtype=np.float64).ravel()
    hits = np.flatnonzero(lv > threshold)
    if hits.size == 0:
        return None
    p = int(hits[0]) + 1  # token position
    ctx = [int(t) for t in tok[max(0, p - context):p]]
    text, ctx_text = decode([int(tok[p])]), decode(ctx)
    return Exceedance(p, int(tok[p]), text, escape(text), float(lv[p - 1]), ctx, ctx_text, escape(ctx_text))


@dataclass(frozen=True)
class TokenDiff:
    position: int
    token_id: int
    text: str
    escaped: str
    loss_a: float | None
    loss_b: float | None
    diff: float | None  # loss_b - loss_a

    def to_dict(self) -> dict:
        return asdict(self)


def compare_token_losses(tokens, losses_a, losses_b, decode: Decode) -> list[TokenDiff]:
    """Two models' per-token losses on one sequence side by side, diff = b - a."""
    rows_a = token_losses(tokens, losses_a, decode)
    lb = np.asarray(losses_b, dtype=np.float64).ravel()
    if lb.size != len(rows_a) - 1:
        raise ValueError(f"losses_b has {lb.size} values, expected {len(rows_a) - 1}")
    out = []
    for r in rows_a:
        b = _loss_at(lb, r.position)
        out.append(TokenDiff(r.position, r.token_id, r.text, r.escaped, r.loss, b,
                             None if b is None else b - r.loss))
    return out


def format_report(seq_index: int, n_sequences: int, tokens, losses, decode: Decode,
                  threshold: float = DEFAULT_THRESHOLD, context: int = DEFAULT_CONTEXT) -> str:
    """The appendix E.1 text block for one sequence (first exceedance and the token:loss listing)."""
    ex = first_exceeding(tokens, losses, decode, threshold, context)
    thr = f"{threshold:g}"
    if ex is None:
        lines = [f"Sample {seq_index} out of {n_sequences} has no token with CE loss > {thr}."]
    else:
        lines = [
            f"Sample {seq_index} out of {n_sequences} has tokens with CE loss > {thr}.",
            f"First token with CE loss > {thr}:{ex.token_id} at position {ex.position}.",
            f"Decoded:{ex.text!r}",
            f"Decoded (unicode_escape):'{ex.escaped}'",
            f"Sequence of last {len(ex.context_ids)} Tokens for prediction:" + " ".join(map(str, ex.context_ids)),
            f"Decoded:{ex.context_text!r}",
            f"Decoded (unicode_escape):'{ex.context_escaped}'",
        ]
    rows = token_losses(tokens, losses, decode)
    lines.append("(Token:Loss)")
    # Losses print as the shortest repr of their float32 value (they are stored as float32), as in the paper.
    lines.append(", ".join(f"{r.token_id}:{'N/A' if r.loss is None else str(np.float32(r.loss))}" for r in rows))
    return "\n".join(lines) + "\n"
