"""Cutting rows of token ids into sequences of exactly ``seq_len`` tokens: one rule, two engines.

The rule (``T`` = seq_len), applied to rows in order:

* ``pack_all=False`` (``input_ids`` data): a row of at least ``T`` tokens is cut into
  ``len // T`` sequences and its ragged tail is dropped. Shorter rows are *packed*: appended, in
  order, to a packing buffer of their own, and a sequence is emitted each time that buffer holds
  ``T`` tokens (so a short row may straddle two sequences); long rows do not touch the buffer.
* ``pack_all=True`` (``text`` data, each row = a tokenized document + EOT): every row is packed,
  i.e. all documents are concatenated and cut into ``T``-token sequences.

A partial buffer at the end of the data is dropped. Sequences are numbered in emission order.

:func:`chunk_stream` applies the rule incrementally to a stream (Hub data); :class:`ChunkPlan`
computes, from the row lengths alone, where every sequence lives, so that local data can be read
in any order (seeded permutation) and resumed at any sequence without reading what comes before.
Both give identical sequences (tested).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator, Protocol

import numpy as np


class RowStore(Protocol):
    """Random access to rows of token ids."""

    lengths: np.ndarray  # int64 [n_rows]

    def row_slice(self, row: int, start: int, stop: int) -> np.ndarray:
        """Tokens ``[start, stop)`` of row ``row``."""

    def rows_flat(self, rows: np.ndarray) -> np.ndarray:
        """The tokens of ``rows`` (row indices, in that order) concatenated."""


def chunk_stream(rows: Iterable[np.ndarray], seq_len: int, pack_all: bool = False) -> Iterator[np.ndarray]:
    """Apply the module's rule to a stream of rows; yields int64 arrays of ``seq_len`` tokens."""
    if seq_len < 1:
        raise ValueError("seq_len must be >= 1")
    buf: list[np.ndarray] = []
    buf_len = 0
    for row in rows:
        row = np.asarray(row, dtype=np.int64)
        if not pack_all and len(row) >= seq_len:
            for j in range(len(row) // seq_len):
                yield row[j * seq_len:(j + 1) * seq_len]
            continue
        buf.append(row)
        buf_len += len(row)
        if buf_len >= seq_len:
            flat = np.concatenate(buf)
            n = buf_len // seq_len
            for j in range(n):
                yield flat[j * seq_len:(j + 1) * seq_len]
            rest = flat[n * seq_len:]
            buf, buf_len = ([rest] if len(rest) else []), len(rest)


@dataclass(frozen=True)
class ChunkPlan:
    """Where each sequence of a row store lives, computed from row lengths (vectorized).

    Sequence ``k`` is either a slice ``[offset, offset+T)`` of row ``row[k]`` (``packed[k]`` False)
    or the slice ``[offset, offset+T)`` of the concatenation of the packed rows (``packed_rows`` in
    order, with cumulative lengths ``packed_cum``).
    """

    seq_len: int
    row: np.ndarray
    offset: np.ndarray
    packed: np.ndarray
    packed_rows: np.ndarray
    packed_cum: np.ndarray

    @classmethod
    def build(cls, lengths: np.ndarray, seq_len: int, pack_all: bool = False) -> "ChunkPlan":
        """The plan for rows of the given lengths under the module's rule."""
        if seq_len < 1:
            raise ValueError("seq_len must be >= 1")
        lengths = np.asarray(lengths, dtype=np.int64)
        t = seq_len
        is_long = np.zeros(len(lengths), bool) if pack_all else lengths >= t
        long_idx = np.flatnonzero(is_long)
        per_row = lengths[long_idx] // t
        long_rows = np.repeat(long_idx, per_row)
        first_of_row = np.repeat(np.cumsum(per_row) - per_row, per_row)
        long_j = np.arange(len(long_rows), dtype=np.int64) - first_of_row

        short_idx = np.flatnonzero(~is_long)
        cum = np.concatenate([[0], np.cumsum(lengths[short_idx])]).astype(np.int64)
        n_packed = int(cum[-1] // t)
        ends = (np.arange(n_packed, dtype=np.int64) + 1) * t
        done_at = short_idx[np.searchsorted(cum, ends, side="left") - 1] if n_packed else short_idx[:0]

        emit_row = np.concatenate([long_rows, done_at])
        sub = np.concatenate([long_j, np.zeros(n_packed, np.int64)])
        order = np.lexsort((sub, emit_row))
        return cls(
            seq_len=t,
            row=np.concatenate([long_rows, np.full(n_packed, -1, np.int64)])[order],
            offset=np.concatenate([long_j * t, ends - t])[order],
            packed=np.concatenate([np.zeros(len(long_rows), bool), np.ones(n_packed, bool)])[order],
            packed_rows=short_idx,
            packed_cum=cum,
        )

    def __len__(self) -> int:
        return len(self.offset)

    def read(self, store: RowStore, k: int) -> np.ndarray:
        """Sequence ``k`` (int64, ``seq_len`` tokens) from ``store``."""
        t, off = self.seq_len, int(self.offset[k])
        if not self.packed[k]:
            return np.asarray(store.row_slice(int(self.row[k]), off, off + t), dtype=np.int64)
        first = int(np.searchsorted(self.packed_cum, off, side="right")) - 1
        last = int(np.searchsorted(self.packed_cum, off + t, side="left")) - 1
        flat = store.rows_flat(self.packed_rows[first:last + 1])
        start = off - int(self.packed_cum[first])
        return np.asarray(flat[start:start + t], dtype=np.int64)
