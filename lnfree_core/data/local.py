"""Local data as random-access rows of token ids (:class:`~lnfree_core.data.chunking.RowStore`).

``input_ids`` data is loaded with ``datasets`` (parquet/jsonl via ``load_dataset``, which converts
once into its Arrow cache; ``save_to_disk`` folders via ``load_from_disk``) and stays memory-mapped:
only row lengths (Arrow offsets) are read up front, tokens on demand.

``text`` data is tokenized once per process (each document + EOT) into an in-memory int32 array,
so it suits demo- and evaluation-sized corpora; pre-tokenize large corpora into ``input_ids``.
``.txt`` files are read as bytes and decoded as UTF-8, so ``\\r\\n`` and other control characters
survive (they matter: see appendix E).
"""

from __future__ import annotations

import contextlib
import os

import numpy as np
import pyarrow.compute as pc

from lnfree_core.data.chunking import ChunkPlan, RowStore
from lnfree_core.data.registry import TOKENS_COLUMN, DatasetSpec, SplitSpec
from lnfree_core.data.tokenizer import EOT_ID, load_gpt2_tokenizer

_TOKENIZE_BATCH = 1_000


class ArrowRowStore:
    """Rows of a (memory-mapped) Arrow list column."""

    def __init__(self, column) -> None:
        self._col = column
        self.lengths = pc.list_value_length(column).fill_null(0).to_numpy().astype(np.int64)

    def row_slice(self, row: int, start: int, stop: int) -> np.ndarray:
        flat = pc.list_flatten(self._col.slice(row, 1)).to_numpy()
        return flat[start:stop]

    def rows_flat(self, rows: np.ndarray) -> np.ndarray:
        if len(rows) and rows[-1] - rows[0] + 1 == len(rows):
            part = self._col.slice(int(rows[0]), len(rows))
        else:
            part = self._col.take(rows)
        return pc.list_flatten(part).to_numpy()


class ArrayRowStore:
    """Rows held as one flat int32 array plus row offsets."""

    def __init__(self, flat: np.ndarray, offsets: np.ndarray) -> None:
        self.flat = flat
        self.offsets = offsets
        self.lengths = np.diff(offsets).astype(np.int64)

    def row_slice(self, row: int, start: int, stop: int) -> np.ndarray:
        base = int(self.offsets[row])
        return self.flat[base + start:base + min(stop, int(self.lengths[row]))]

    def rows_flat(self, rows: np.ndarray) -> np.ndarray:
        if len(rows) and rows[-1] - rows[0] + 1 == len(rows):
            return self.flat[int(self.offsets[rows[0]]):int(self.offsets[rows[-1] + 1])]
        return np.concatenate([self.flat[self.offsets[r]:self.offsets[r + 1]] for r in rows] or [self.flat[:0]])


@contextlib.contextmanager
def _quiet_datasets():
    """Hide datasets' progress bars for one call, restoring the previous setting."""
    # local: importing datasets costs ~1.1 s (measured); only save_to_disk folders need it
    from datasets.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    was_disabled = are_progress_bars_disabled()
    disable_progress_bars()
    try:
        yield
    finally:
        if not was_disabled:
            enable_progress_bars()


def load_arrow_dataset(spec: DatasetSpec, split: SplitSpec):
    """The split as a ``datasets.Dataset`` (memory-mapped Arrow)."""
    # local: importing datasets costs ~1.1 s (measured); only save_to_disk folders need it
    import datasets

    with _quiet_datasets():
        if spec.format == "arrow":
            return datasets.load_from_disk(split.files[0])
        builder = "parquet" if spec.format == "parquet" else "json"
        return datasets.load_dataset(builder, data_files=list(split.files), split="train")


def _read_txt(path: str) -> str:
    with open(path, "rb") as f:
        return f.read().decode("utf-8", errors="replace")


def _texts(spec: DatasetSpec, split: SplitSpec):
    """Batches of documents of a text split."""
    if spec.format == "txt":
        for i in range(0, len(split.files), _TOKENIZE_BATCH):
            yield [_read_txt(f) for f in split.files[i:i + _TOKENIZE_BATCH]]
        return
    ds = load_arrow_dataset(spec, split).select_columns([spec.column])
    for batch in ds.iter(batch_size=_TOKENIZE_BATCH):
        yield [t if t is not None else "" for t in batch[spec.column]]


def tokenize_documents(batches, offline: bool | None = None) -> ArrayRowStore:
    """Tokenize batches of documents, appending EOT to each, into an :class:`ArrayRowStore`."""
    backend = load_gpt2_tokenizer(offline=offline).backend_tokenizer
    pieces: list[np.ndarray] = []
    lengths: list[int] = []
    for texts in batches:
        for enc in backend.encode_batch(texts, add_special_tokens=False):
            ids = np.asarray(enc.ids + [EOT_ID], dtype=np.int32)
            pieces.append(ids)
            lengths.append(len(ids))
    flat = np.concatenate(pieces) if pieces else np.zeros(0, np.int32)
    offsets = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)]).astype(np.int64)
    return ArrayRowStore(flat, offsets)


def _fingerprint(split: SplitSpec) -> tuple:
    """Changes when any file of the split changes (size or mtime), so caches stay valid."""
    out = []
    for f in split.files:
        paths = [f] if os.path.isfile(f) else sorted(
            os.path.join(d, n) for d, _, names in os.walk(f) for n in names)
        out.extend((p, os.path.getsize(p), os.path.getmtime(p)) for p in paths)
    return tuple(out)


_MAX_CACHED = 4
_stores: dict[tuple, RowStore] = {}
_plans: dict[tuple, ChunkPlan] = {}


def _remember(cache: dict, key: tuple, value):
    """Store ``value`` under ``key``, evicting the oldest entry beyond ``_MAX_CACHED``."""
    if len(cache) >= _MAX_CACHED:
        cache.pop(next(iter(cache)))
    cache[key] = value
    return value


def open_local(spec: DatasetSpec, split_name: str, offline: bool | None = None) -> RowStore:
    """The rows of a local split (cached per process until one of its files changes)."""
    split = spec.split(split_name)
    key = (spec, split.name, _fingerprint(split))
    if key not in _stores:
        if spec.column == TOKENS_COLUMN:
            store: RowStore = ArrowRowStore(load_arrow_dataset(spec, split).data.table.column(TOKENS_COLUMN))
        else:
            store = tokenize_documents(_texts(spec, split), offline=offline)
        _remember(_stores, key, store)
    return _stores[key]


def local_plan(spec: DatasetSpec, split_name: str, seq_len: int, offline: bool | None = None
               ) -> tuple[RowStore, ChunkPlan]:
    """Rows and chunk plan of a local split for ``seq_len`` (both cached)."""
    store = open_local(spec, split_name, offline)
    split = spec.split(split_name)
    key = (spec, split.name, _fingerprint(split), seq_len)
    if key not in _plans:
        _remember(_plans, key, ChunkPlan.build(store.lengths, seq_len, pack_all=spec.column != TOKENS_COLUMN))
    return store, _plans[key]
