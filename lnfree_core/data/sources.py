"""Sequences of token ids for training and evaluation: the API the trainer and evaluation use.

``iter_sequences`` yields int64 arrays of exactly ``seq_len`` tokens, cut by the rule of
:mod:`lnfree_core.data.chunking` (``input_ids`` rows >= seq_len are cut into chunks, ragged tail
dropped; shorter rows are packed together; ``text`` documents get EOT appended and are
concatenated). It is deterministic for a given (dataset, split, seq_len, shuffle, seed): sequence
``k`` is always the same, and ``skip=k`` resumes exactly at sequence ``k``.

* Local data: the chunk plan is computed from row lengths; ``shuffle=True`` visits the sequences in
  the order of ``numpy.random.default_rng(seed).permutation(n)``; ``skip`` costs nothing. The
  iterator ends after the last sequence (one pass).
* Hub data: streamed with ``datasets.load_dataset(..., streaming=True)``; ``shuffle=True`` shuffles
  *rows* with a seeded buffer (``shuffle_buffer`` rows; datasets also shuffles the shard order) before
  cutting. Skipping whole fixed-length rows is delegated to ``IterableDataset.skip``; the rest is
  read and dropped. Offline (HF_HUB_OFFLINE=1, ``offline=True`` or no network) a Hub name fails at
  once with :class:`~lnfree_core.data.hub.HubUnavailableError`.
"""

from __future__ import annotations

import itertools
import logging
import os
from typing import Iterable, Iterator

import numpy as np

from lnfree_core.data.chunking import chunk_stream
from lnfree_core.data.hub import HubUnavailableError, hub_unavailable_message, resolve_offline
from lnfree_core.data.local import load_arrow_dataset, local_plan
from lnfree_core.data.registry import TOKENS_COLUMN, DatasetSpec, SplitSpec, resolve_dataset
from lnfree_core.data.tokenizer import EOT_ID, load_gpt2_tokenizer

log = logging.getLogger(__name__)

DEFAULT_SHUFFLE_BUFFER = 1_000


def _check_args(seq_len: int, skip: int) -> None:
    if seq_len < 1:
        raise ValueError(f"seq_len must be >= 1, got {seq_len}")
    if skip < 0:
        raise ValueError(f"skip must be >= 0, got {skip}")


def _iter_local(spec: DatasetSpec, split: str, seq_len: int, skip: int, shuffle: bool, seed: int,
                offline: bool | None) -> Iterator[np.ndarray]:
    store, plan = local_plan(spec, split, seq_len, offline)
    order = np.random.default_rng(seed).permutation(len(plan)) if shuffle else None
    for k in range(skip, len(plan)):
        yield plan.read(store, int(order[k]) if order is not None else k)


def _require_hub(spec: DatasetSpec, offline: bool | None) -> None:
    if resolve_offline(offline):
        raise HubUnavailableError(hub_unavailable_message(f"Dataset '{spec.name}' ({spec.hub_id})"))


def _tokenized(texts: Iterable[str | None], offline: bool | None) -> Iterator[list[int]]:
    backend = load_gpt2_tokenizer(offline=offline).backend_tokenizer
    for text in texts:
        yield backend.encode(text or "", add_special_tokens=False).ids + [EOT_ID]


def stream_sequences(rows_ds, spec: DatasetSpec, split: SplitSpec, *, seq_len: int = 1024, skip: int = 0,
                     shuffle: bool = False, seed: int = 0, shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER,
                     offline: bool | None = None) -> Iterator[np.ndarray]:
    """Sequences from a streaming ``datasets.IterableDataset`` of ``split``'s underlying rows.

    Applies the split's row range, the optional seeded buffer shuffle, the resume ``skip`` and the
    chunking rule. Used for Hub datasets (and testable on a local streaming dataset).
    """
    _check_args(seq_len, skip)
    column = spec.column
    ds = rows_ds.select_columns([column])
    if split.start:
        ds = ds.skip(split.start)
    if split.stop is not None:
        ds = ds.take(split.stop - split.start)
    if shuffle:
        ds = ds.shuffle(seed=seed, buffer_size=shuffle_buffer)
    fixed = spec.row_len if column == TOKENS_COLUMN and spec.row_len and spec.row_len >= seq_len else None
    if fixed:
        per_row = fixed // seq_len
        skip_rows, skip = divmod(skip, per_row)
        if skip_rows:
            ds = ds.skip(skip_rows)
    rows: Iterable = (ex[column] for ex in ds)
    if fixed:
        rows = _checked_lengths(rows, fixed, spec.name)
    elif column != TOKENS_COLUMN:
        rows = _tokenized(rows, offline)
    seqs = chunk_stream(rows, seq_len, pack_all=column != TOKENS_COLUMN)
    yield from itertools.islice(seqs, skip, None)


def _checked_lengths(rows: Iterable, row_len: int, name: str) -> Iterator:
    """Pass rows through, insisting on the declared fixed row length (resume relies on it)."""
    for i, row in enumerate(rows):
        if len(row) != row_len:
            raise ValueError(f"dataset {name!r}: row {i} has {len(row)} tokens, the registry declares "
                             f"{row_len}; resuming by whole rows would not be exact")
        yield row


def _iter_hub(spec: DatasetSpec, split: str, seq_len: int, skip: int, shuffle: bool, seed: int,
              shuffle_buffer: int, offline: bool | None) -> Iterator[np.ndarray]:
    _require_hub(spec, offline)
    # local: importing datasets costs ~1.1 s (measured); only Hub streams need it
    import datasets

    sp = spec.split(split)
    ds = datasets.load_dataset(spec.hub_id, split=sp.hub_split, streaming=True)
    yield from stream_sequences(ds, spec, sp, seq_len=seq_len, skip=skip, shuffle=shuffle, seed=seed,
                                shuffle_buffer=shuffle_buffer, offline=offline)


def iter_sequences(dataset: str | os.PathLike | DatasetSpec, *, split: str = "train", seq_len: int = 1024,
                   skip: int = 0, shuffle: bool = False, seed: int = 0,
                   shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER, offline: bool | None = None
                   ) -> Iterator[np.ndarray]:
    """Yield int64 arrays of exactly ``seq_len`` tokens from ``dataset``'s ``split``.

    ``dataset``: a registry name, a local path, or a :class:`DatasetSpec`. ``skip=k`` starts at
    sequence ``k`` of the same deterministic order. Errors (unknown dataset/split, Hub unavailable)
    are raised at the call, not at the first ``next()``.
    """
    _check_args(seq_len, skip)
    spec = resolve_dataset(dataset)
    spec.split(split)  # unknown split: fail now
    if spec.source == "hub":
        _require_hub(spec, offline)
        return _iter_hub(spec, split, seq_len, skip, shuffle, seed, shuffle_buffer, offline=False)
    local_plan(spec, split, seq_len, offline)  # load/validate now
    return _iter_local(spec, split, seq_len, skip, shuffle, seed, offline)


def load_sequences(dataset: str | os.PathLike | DatasetSpec, *, split: str | None = None, seq_len: int = 1024,
                   n_sequences: int | None = None, offline: bool | None = None) -> np.ndarray:
    """The first ``n_sequences`` sequences (unshuffled) of a split, as an int32 array ``[n, seq_len]``.

    ``split=None`` means the dataset's evaluation split (``owt``: validation; ``pile``/``pile-filtered``:
    train; local: validation, else test, else train). ``n_sequences=None`` means the dataset's
    evaluation size on its evaluation split (``pile``: 10,000) and else the whole split; an unbounded
    Hub split needs an explicit ``n_sequences``. If the split holds fewer sequences, all are returned.
    int32 holds every GPT-2 id and halves memory; cast with ``torch.as_tensor(x).long()`` for a model.
    """
    spec = resolve_dataset(dataset)
    split = split or spec.eval_split
    sp = spec.split(split)
    if n_sequences is None and sp.name == spec.eval_split:
        n_sequences = spec.eval_sequences
    if n_sequences is None and spec.source == "hub" and sp.stop is None and sp.n_rows is None:
        raise ValueError(f"split {sp.name!r} of {spec.name!r} is a large Hub stream: pass n_sequences")
    seqs = iter_sequences(spec, split=sp.name, seq_len=seq_len, offline=offline)
    out = np.zeros((0, seq_len), np.int32)
    taken = list(itertools.islice(seqs, n_sequences))
    if taken:
        out = np.stack(taken).astype(np.int32)
    if n_sequences is not None and len(out) < n_sequences:
        log.warning("%s/%s holds %d sequences of %d tokens, fewer than the %d asked for",
                    spec.name, sp.name, len(out), seq_len, n_sequences)
    return out


def dataset_info(dataset: str | os.PathLike | DatasetSpec, *, seq_len: int = 1024,
                 offline: bool | None = None) -> dict:
    """A JSON-ready description: name, source, format, column, description, splits and known sizes.

    Hub sizes come from the registry (nothing is downloaded). Local ``input_ids`` data reports rows,
    tokens and ``seq_len``-token sequences; local text reports its number of documents only (counting
    tokens would mean tokenizing it).
    """
    spec = resolve_dataset(dataset)
    splits = {}
    for sp in spec.splits:
        entry: dict = {"rows": sp.n_rows, "tokens": None, "sequences": None}
        if spec.source == "hub":
            entry.update(hub_split=sp.hub_split, start=sp.start, stop=sp.stop)
            if sp.stop is not None:
                entry["rows"] = sp.stop - sp.start
            if entry["rows"] is not None and spec.row_len:
                entry["tokens"] = entry["rows"] * spec.row_len
                if spec.row_len >= seq_len:
                    entry["sequences"] = entry["rows"] * (spec.row_len // seq_len)
        else:
            entry["files"] = list(sp.files)
            if spec.column == TOKENS_COLUMN:
                store, plan = local_plan(spec, sp.name, seq_len, offline)
                entry.update(rows=len(store.lengths), tokens=int(store.lengths.sum()), sequences=len(plan))
            elif entry["rows"] is None:
                entry["rows"] = _count_rows(spec, sp)
        splits[sp.name] = entry
    return {
        "name": spec.name, "source": spec.source, "format": spec.format, "column": spec.column,
        "hub_id": spec.hub_id, "path": spec.path, "description": spec.description, "size": spec.size,
        "row_len": spec.row_len, "eval_split": spec.eval_split, "eval_sequences": spec.eval_sequences,
        "seq_len": seq_len, "splits": splits,
    }


def _count_rows(spec: DatasetSpec, sp: SplitSpec) -> int:
    return len(load_arrow_dataset(spec, sp))
