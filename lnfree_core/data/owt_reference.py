"""The reference's OpenWebText validation split, rebuilt from raw OpenWebText (Table 1's OWT column).

lnfree's ``owt`` validation split is the first 4,400 rows of the tokenized Hub dataset
(apollo-research/Skylion007-openwebtext-tokenizer-gpt2). The authors' code evaluated instead on a
seeded split of the *raw* dataset (Skylion007/openwebtext, documents as text):

    split = raw["train"].train_test_split(test_size=0.0005, seed=2357, shuffle=True)    # datasets
    each document of split["test"]: tokenize(text + "<|endoftext|>") with the GPT-2 tokenizer
    per `map` batch of 512 documents (within each of 32 contiguous shards, num_proc=32):
        concatenate the batch's tokens, cut into rows of 1024, drop the remainder

`reference_owt_rows` does exactly this (the sharding and batching decide which tokens are dropped, so
they are reproduced too), and `build_reference_owt` writes the rows as ``validation.parquet`` in a folder
that every lnfree command accepts as ``--dataset DIR``. It needs raw OpenWebText: a Hub id (network)
or a local `save_to_disk` / data-file folder of it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .tokenizer import load_gpt2_tokenizer

RAW_OWT = "Skylion007/openwebtext"
REFERENCE_SEED = 2357
REFERENCE_TEST_SIZE = 0.0005
REFERENCE_NUM_PROC = 32
REFERENCE_MAP_BATCH = 512


def reference_test_documents(raw_train, *, seed: int = REFERENCE_SEED, test_size: float = REFERENCE_TEST_SIZE):
    """The documents of the reference's held-out split: `datasets.Dataset.train_test_split(...)["test"]`."""
    return raw_train.train_test_split(test_size=test_size, seed=seed, shuffle=True)["test"]


def reference_owt_rows(test_docs, tokenize: Callable[[list[str]], Sequence[Sequence[int]]], eos_text: str, *,
                       seq_len: int = 1024, num_shards: int = REFERENCE_NUM_PROC,
                       batch_size: int = REFERENCE_MAP_BATCH) -> np.ndarray:
    """Rows [n, seq_len] of the tokenized test documents, chunked per map batch within contiguous shards."""
    rows: list[list[int]] = []
    n_shards = max(1, min(num_shards, len(test_docs)))
    for k in range(n_shards):
        shard = test_docs.shard(num_shards=n_shards, index=k, contiguous=True)
        for b in range(0, len(shard), batch_size):
            texts = [t + eos_text for t in shard[b:b + batch_size]["text"]]
            flat = [tok for ids in tokenize(texts) for tok in ids]
            rows += [flat[i * seq_len:(i + 1) * seq_len] for i in range(len(flat) // seq_len)]
    return np.asarray(rows, dtype=np.int64).reshape(-1, seq_len)


def _load_raw_train(raw: str):
    # local: importing datasets costs ~1.1 s (measured); only reading raw OpenWebText needs it
    import datasets

    path = Path(raw)
    if path.exists():
        if (path / "dataset_dict.json").exists() or (path / "state.json").exists():
            ds = datasets.load_from_disk(str(path))
        else:
            ds = datasets.load_dataset(str(path))
    else:
        ds = datasets.load_dataset(raw)
    if isinstance(ds, datasets.DatasetDict):
        if "train" not in ds:
            raise ValueError(f"{raw}: raw OpenWebText has a 'train' split; found {list(ds)}")
        ds = ds["train"]
    if "text" not in ds.column_names:
        raise ValueError(f"{raw}: expected raw documents in a 'text' column, found {ds.column_names}")
    return ds


def build_reference_owt(raw: str, out: str | Path, *, seed: int = REFERENCE_SEED, seq_len: int = 1024) -> Path:
    """Write the reference's OWT validation rows to OUT/validation.parquet (column input_ids). Returns the file."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} exists and is not empty; choose a new folder")
    docs = reference_test_documents(_load_raw_train(raw), seed=seed)
    tok = load_gpt2_tokenizer()
    rows = reference_owt_rows(docs, lambda texts: tok(texts)["input_ids"], tok.eos_token, seq_len=seq_len)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "validation.parquet"
    pq.write_table(pa.table({"input_ids": [r.tolist() for r in rows]}), path)
    return path


OWT_SPLIT_NOTE = (
    "OWT: lnfree's `owt` validation split is the first 4,400 rows (4.5M tokens) of the tokenized Hub dataset; "
    "the paper's Table 1 used a seeded 0.0005 train/test split of raw OpenWebText "
    "(train_test_split(test_size=0.0005, seed=2357)), so its OWT numbers differ slightly. Where raw OpenWebText "
    "is available, `python -m lnfree_core data owt-reference --out DIR` rebuilds that split; use DIR as the dataset."
)
