"""Build a Pile-filtered-style dataset (appendix E of the paper).

Tokens that occur in the first ``scan`` sequences of a *target* (The Pile) but nowhere in the first
``scan`` sequences of a *reference* (OpenWebText) are the "removed tokens" (Table 5: ``\\t``,
``\\n\\n``, ``\\xa0``, ``\\r``, control characters, ...). The scanned target sequences containing none
of them are written to ``out_dir``:

* ``train.parquet`` -- column ``input_ids`` (list of int32, ``seq_len`` each), readable by
  ``resolve_dataset(out_dir)``, ``iter_sequences`` and ``datasets.load_dataset("parquet", ...)``;
* ``tokens_removed.json`` -- Table 5: ``token_id``, ``token`` (decoded), ``repr``, ``count`` (in the
  scanned target) and ``sequences`` (scanned target sequences containing it), by count, descending;
* ``filter_report.json`` -- the whole :class:`FilterReport`.

The target is read once: its scanned sequences are spooled to a temporary uint16 file in
``out_dir`` so that memory stays flat whatever ``scan`` is (the paper scanned 1,000,000 sequences).
"""

from __future__ import annotations

import itertools
import json
import os
from dataclasses import asdict, dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from lnfree_core.data.registry import DATA_EXTENSIONS
from lnfree_core.data.sources import iter_sequences
from lnfree_core.data.tokenizer import VOCAB_SIZE, load_gpt2_tokenizer

DEFAULT_SCAN = 100_000
OUTPUT_FILES = ("train.parquet", "tokens_removed.json", "filter_report.json")
_BATCH = 512


@dataclass(frozen=True)
class RemovedToken:
    """One row of Table 5."""

    token_id: int
    token: str
    count: int
    sequences: int

    @property
    def repr(self) -> str:
        """``repr`` of the decoded token, as printed in the report (``'\\t'``)."""
        return repr(self.token)


@dataclass
class FilterReport:
    """What :func:`build_filtered` did; ``removed_tokens`` sorted by count (desc), then id."""

    reference: str
    target: str
    reference_split: str
    target_split: str
    scan: int
    seq_len: int
    reference_sequences: int
    target_sequences: int
    kept_sequences: int
    out_dir: str
    removed_tokens: list[RemovedToken] = field(default_factory=list)

    def to_dict(self) -> dict:
        """JSON-ready dict (each removed token also carries its ``repr``)."""
        d = asdict(self)
        d["removed_tokens"] = [{**asdict(t), "repr": t.repr} for t in self.removed_tokens]
        return d

    def table(self, limit: int | None = None) -> str:
        """The removed tokens as a text table like the paper's Table 5."""
        rows = self.removed_tokens[:limit] if limit else self.removed_tokens
        lines = [f"{'token_id':>8}  {'token':<16} {'count':>12} {'sequences':>10}"]
        lines += [f"{t.token_id:>8}  {t.repr:<16} {t.count:>12,} {t.sequences:>10,}" for t in rows]
        if limit and len(self.removed_tokens) > limit:
            lines.append(f"... {len(self.removed_tokens) - limit} more in tokens_removed.json")
        return "\n".join(lines)


def _batches(seqs, n: int):
    it = itertools.islice(seqs, n)
    while batch := list(itertools.islice(it, _BATCH)):
        yield np.stack(batch)


def _count(batch: np.ndarray, counts: np.ndarray, name: str) -> None:
    if batch.size and (batch.min() < 0 or batch.max() >= VOCAB_SIZE):
        raise ValueError(f"{name}: token ids outside the GPT-2 vocabulary [0, {VOCAB_SIZE})")
    counts += np.bincount(batch.ravel(), minlength=VOCAB_SIZE)


def _prepare_out_dir(out_dir: str) -> None:
    os.makedirs(out_dir, exist_ok=True)
    foreign = [n for n in os.listdir(out_dir)
               if n not in OUTPUT_FILES and os.path.splitext(n)[1].lower() in DATA_EXTENSIONS]
    if foreign:
        raise ValueError(f"{out_dir} already holds other data files ({', '.join(sorted(foreign))}); "
                         f"use an empty or new folder")


def _write_parquet(path: str, seqs: np.ndarray, keep_mask: np.ndarray, limit: int | None) -> int:
    """Write the kept rows of ``seqs`` (in order, at most ``limit``) to ``path``; returns how many."""
    kept_idx = np.flatnonzero(keep_mask)[:limit]
    seq_len = seqs.shape[1]
    schema = pa.schema([("input_ids", pa.list_(pa.int32()))])
    tmp = path + ".tmp"
    with pq.ParquetWriter(tmp, schema) as writer:
        for start in range(0, max(len(kept_idx), 1), 1024):
            rows = np.asarray(seqs[kept_idx[start:start + 1024]], dtype=np.int32).ravel()
            offsets = pa.array(np.arange(0, len(rows) + 1, seq_len, dtype=np.int32))
            col = pa.ListArray.from_arrays(offsets, pa.array(rows, pa.int32()))
            writer.write_table(pa.table({"input_ids": col}, schema=schema))
    os.replace(tmp, path)
    return len(kept_idx)


def build_filtered(reference, target, out_dir: str | os.PathLike, *, scan: int = DEFAULT_SCAN,
                   seq_len: int = 1024, keep: int | None = None, reference_split: str = "train",
                   target_split: str = "train", offline: bool | None = None) -> FilterReport:
    """Filter ``target`` against ``reference`` (names or paths) into ``out_dir``; see the module doc.

    ``scan``: sequences of ``seq_len`` tokens read from each dataset (fewer if it is smaller).
    ``keep``: write at most this many kept sequences (the paper kept 10,000); counts in the report
    always cover all scanned target sequences.
    """
    if scan < 1:
        raise ValueError("scan must be >= 1")
    out_dir = os.path.abspath(os.fspath(out_dir))
    ref_seqs = iter_sequences(reference, split=reference_split, seq_len=seq_len, offline=offline)
    tgt_seqs = iter_sequences(target, split=target_split, seq_len=seq_len, offline=offline)
    created = not os.path.exists(out_dir)
    _prepare_out_dir(out_dir)
    try:
        return _filter_into(reference, target, out_dir, ref_seqs, tgt_seqs, scan=scan, seq_len=seq_len, keep=keep,
                            reference_split=reference_split, target_split=target_split, offline=offline)
    except EmptyFilterInput:
        if created and not os.listdir(out_dir):
            os.rmdir(out_dir)  # made by this call and still empty: leave nothing behind
        raise


class EmptyFilterInput(ValueError):
    """A dataset yields no complete sequence of seq_len tokens: nothing to count or keep."""


def _empty(name, split: str, seq_len: int) -> EmptyFilterInput:
    return EmptyFilterInput(
        f"{name} ({split}) yields no complete sequence of {seq_len} tokens (it holds fewer tokens than that): "
        f"pass a smaller --seq-len, or more data; no output was written"
    )


def _filter_into(reference, target, out_dir: str, ref_seqs, tgt_seqs, *, scan: int, seq_len: int,
                 keep: int | None, reference_split: str, target_split: str, offline: bool | None) -> FilterReport:

    ref_counts = np.zeros(VOCAB_SIZE, np.int64)
    n_ref = 0
    for batch in _batches(ref_seqs, scan):
        _count(batch, ref_counts, str(reference))
        n_ref += len(batch)
    if n_ref == 0:
        raise _empty(reference, reference_split, seq_len)

    spool = os.path.join(out_dir, ".target_scan.u16")
    tgt_counts = np.zeros(VOCAB_SIZE, np.int64)
    n_tgt = 0
    try:
        with open(spool, "wb") as f:
            for batch in _batches(tgt_seqs, scan):
                _count(batch, tgt_counts, str(target))
                f.write(batch.astype(np.uint16).tobytes())
                n_tgt += len(batch)
        if n_tgt == 0:
            raise _empty(target, target_split, seq_len)
        removed_ids = np.flatnonzero((tgt_counts > 0) & (ref_counts == 0))
        is_removed = np.zeros(VOCAB_SIZE, bool)
        is_removed[removed_ids] = True
        seqs = (np.memmap(spool, dtype=np.uint16, mode="r", shape=(n_tgt, seq_len)) if n_tgt
                else np.zeros((0, seq_len), np.uint16))
        bad = np.zeros(n_tgt, bool)
        seq_counts = np.zeros(VOCAB_SIZE, np.int64)
        for start in range(0, n_tgt, _BATCH):
            block = np.asarray(seqs[start:start + _BATCH])
            hit = is_removed[block]
            bad[start:start + len(block)] = hit.any(axis=1)
            for row, mask in zip(block, hit):
                if mask.any():
                    seq_counts[np.unique(row[mask])] += 1
        kept = _write_parquet(os.path.join(out_dir, "train.parquet"), seqs, ~bad, keep)
        del seqs
    finally:
        if os.path.exists(spool):
            os.remove(spool)

    tok = load_gpt2_tokenizer(offline=offline)
    removed = sorted(
        (RemovedToken(int(i), tok.decode([int(i)]), int(tgt_counts[i]), int(seq_counts[i])) for i in removed_ids),
        key=lambda t: (-t.count, t.token_id),
    )
    report = FilterReport(
        reference=str(reference), target=str(target), reference_split=reference_split,
        target_split=target_split, scan=scan, seq_len=seq_len, reference_sequences=n_ref,
        target_sequences=n_tgt, kept_sequences=kept, out_dir=out_dir, removed_tokens=removed,
    )
    data = report.to_dict()
    _write_json(os.path.join(out_dir, "tokens_removed.json"), data["removed_tokens"])
    _write_json(os.path.join(out_dir, "filter_report.json"), data)
    return report


def _write_json(path: str, obj) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=1, ensure_ascii=True)
        f.write("\n")
    os.replace(tmp, path)
