"""Does a dataset fit a model? Checked before training starts, so bad data never reaches an embedding.

A model with a vocabulary of V entries accepts integer token ids in [0, V). Text data is tokenized
with the GPT-2 tokenizer (ids up to 50256, plus EOT 50256), and the registry's Hub datasets hold
GPT-2 ids, so both need V >= 50257. Local ``input_ids`` data is scanned in full (Arrow compute, no
Python loop): its values must be integers within [0, V). Batches are checked again as they are read
(`check_batch`), which also covers streamed Hub data.
"""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lnfree_core.data.local import ArrowRowStore, open_local
from lnfree_core.data.registry import TOKENS_COLUMN, resolve_dataset
from lnfree_core.data.tokenizer import EOT_ID

GPT2_VOCAB = EOT_ID + 1


class DataModelMismatch(ValueError):
    """The data cannot be fed to the model; the message says what to change."""


def check_dataset_fits(dataset: str | os.PathLike, vocab_size: int, split: str = "train") -> None:
    """Raise DataModelMismatch if `dataset`'s `split` holds ids that a model of `vocab_size` cannot embed."""
    spec = resolve_dataset(dataset)
    if spec.column != TOKENS_COLUMN:
        if vocab_size < GPT2_VOCAB:
            raise DataModelMismatch(
                f"dataset {spec.name!r} is text, which lnfree tokenizes with the GPT-2 tokenizer (ids up to "
                f"{GPT2_VOCAB - 1}), but the model's vocabulary has only {vocab_size} entries: use a model "
                f"with the GPT-2 vocabulary, or a pre-tokenized dataset (an '{TOKENS_COLUMN}' column) whose "
                f"ids are below {vocab_size}"
            )
        return
    if spec.source == "hub":
        if vocab_size < GPT2_VOCAB:
            raise DataModelMismatch(
                f"dataset {spec.name!r} holds GPT-2 token ids (up to {GPT2_VOCAB - 1}) but the model's vocabulary "
                f"has only {vocab_size} entries: use a GPT-2-vocabulary model, or local data with ids below "
                f"{vocab_size}"
            )
        return

    store = open_local(spec, split)
    if isinstance(store, ArrowRowStore):
        col = store._col
        value_type = col.type.value_type if hasattr(col.type, "value_type") else col.type
        if not pa.types.is_integer(value_type):
            raise DataModelMismatch(
                f"dataset {spec.name!r}: the '{TOKENS_COLUMN}' column holds {value_type} values, but token ids must "
                "be integers (floats would be cut to whole numbers silently): write the ids as integers"
            )
        mm = pc.min_max(pc.list_flatten(col)).as_py() if len(col) else {"min": None, "max": None}
        lo, hi = mm["min"], mm["max"]
    else:
        flat = store.flat
        lo, hi = (int(flat.min()), int(flat.max())) if flat.size else (None, None)
    if lo is None:
        return
    _check_range(spec.name, lo, hi, vocab_size)


def _check_range(name: str, lo: int, hi: int, vocab_size: int) -> None:
    if lo < 0:
        raise DataModelMismatch(f"dataset {name!r} holds a negative token id ({lo}); token ids must be in "
                                f"[0, {vocab_size}) for this model")
    if hi >= vocab_size:
        raise DataModelMismatch(
            f"dataset {name!r} holds token id {hi}, outside the model's vocabulary of {vocab_size} entries "
            f"(ids 0..{vocab_size - 1}): use data tokenized for this model, or a model with a larger vocabulary"
        )


def check_batch(name: str, x: np.ndarray, vocab_size: int) -> None:
    """The same range check on one batch of ids (cheap; catches streamed data)."""
    if x.size:
        _check_range(name, int(x.min()), int(x.max()), vocab_size)
