"""Token arrays of the demo suite: tokenizing documents, packing rows, the compact vocabulary, parquet I/O.

Documents are tokenized with the GPT-2 tokenizer, each followed by EOT (``<|endoftext|>``), then
concatenated and cut into rows of exactly ``seq_len`` tokens (a partial last row is dropped), the
layout of the Hub's pre-tokenized datasets. With ``start_token`` (the demo uses EOT), every row is
that token followed by the next ``seq_len - 1`` tokens of the stream, so position 0 always holds the
same token, as in GPT-2-style training where a sequence begins with ``<|endoftext|>``: this fixed
first token is what the models learn to use as an attention sink (section 5.3 of the paper).
Rows are written as a parquet ``input_ids`` column of int32, which
``resolve_dataset``/``iter_sequences`` read as a local dataset.

The compact vocabulary is the sorted set of GPT-2 ids occurring in any demo corpus, plus EOT; as
it is sorted, EOT (50256, the largest GPT-2 id) is always the last compact id.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from lnfree_core.data.tokenizer import EOT_ID, VOCAB_SIZE, load_gpt2_tokenizer


def tokenize(texts: list[str], offline: bool | None = True) -> list[np.ndarray]:
    """GPT-2 ids of each text followed by EOT (int32 arrays); the bundled tokenizer by default (no network)."""
    backend = load_gpt2_tokenizer(offline=offline).backend_tokenizer
    return [np.asarray(e.ids + [EOT_ID], dtype=np.int32) for e in backend.encode_batch(texts, add_special_tokens=False)]


def pack_rows(docs: Iterable[np.ndarray], seq_len: int, max_rows: int | None = None,
              start_token: int | None = None) -> np.ndarray:
    """Concatenate ``docs`` and cut into rows of ``seq_len`` tokens: int32 ``[n_rows, seq_len]``.

    ``start_token``: when given, each row is ``start_token`` then ``seq_len - 1`` tokens of the stream.
    """
    flat = np.concatenate([np.asarray(d, dtype=np.int32) for d in docs] or [np.zeros(0, np.int32)])
    width = seq_len if start_token is None else seq_len - 1  # stream tokens per row
    if width < 1:
        raise ValueError(f"seq_len {seq_len} leaves no room for text after the start token")
    n = len(flat) // width
    if max_rows is not None:
        n = min(n, max_rows)
    rows = flat[:n * width].reshape(n, width)
    if start_token is None:
        return rows
    return np.concatenate([np.full((n, 1), start_token, dtype=np.int32), rows], axis=1)


def build_vocab(*arrays: np.ndarray) -> np.ndarray:
    """The compact vocabulary: sorted GPT-2 ids occurring in ``arrays``, plus EOT (int64)."""
    ids = np.unique(np.concatenate([np.asarray(a, dtype=np.int64).ravel() for a in arrays] + [np.array([EOT_ID])]))
    if ids.min() < 0 or ids.max() >= VOCAB_SIZE:
        raise ValueError("token ids outside the GPT-2 vocabulary")
    return ids


def unigram_entropy(ids: np.ndarray, vocab_size: int) -> float:
    """Entropy (nats) of the token frequencies of ``ids``: the loss of the best context-free predictor."""
    counts = np.bincount(np.asarray(ids, dtype=np.int64).ravel(), minlength=vocab_size).astype(np.float64)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def write_rows(path: str | os.PathLike, rows: np.ndarray) -> Path:
    """Write ``rows`` [n, seq_len] as a parquet file with an ``input_ids`` list<int32> column (atomic)."""
    path = Path(path)
    rows = np.ascontiguousarray(rows, dtype=np.int32)
    n, seq_len = rows.shape
    offsets = pa.array(np.arange(0, n * seq_len + 1, seq_len, dtype=np.int32))
    col = pa.ListArray.from_arrays(offsets, pa.array(rows.ravel(), pa.int32()))
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    pq.write_table(pa.table({"input_ids": col}), tmp)
    os.replace(tmp, path)
    return path


def read_rows(path: str | os.PathLike) -> np.ndarray:
    """The ``input_ids`` rows of a parquet file written by :func:`write_rows` (equal lengths), int32 [n, T]."""
    col = pq.read_table(path, columns=["input_ids"]).column("input_ids").combine_chunks()
    n = len(col)
    flat = col.flatten().to_numpy().astype(np.int32)
    return flat.reshape(n, -1) if n else np.zeros((0, 0), np.int32)
