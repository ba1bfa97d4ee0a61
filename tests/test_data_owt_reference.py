"""The reference's OWT validation split: datasets' seeded train_test_split of the raw documents, tokenized
with an eos appended, concatenated and cut per map batch within contiguous shards, as the reference's
`split.map(tokenize_function, batched=True, batch_size=512, num_proc=32)` did."""

from __future__ import annotations

import numpy as np
import pytest


def _toy_tokenize(texts):
    """A deterministic toy tokenizer: one id per character (eos '#' = 0)."""
    return [[0 if ch == "#" else 1 + (ord(ch) % 50) for ch in t] for t in texts]


def test_rows_match_datasets_map_with_num_proc():
    datasets = pytest.importorskip("datasets")
    from lnfree_core.data.owt_reference import reference_owt_rows, reference_test_documents

    rng = np.random.default_rng(0)
    docs = ["".join(chr(97 + int(c)) for c in rng.integers(0, 26, size=int(rng.integers(3, 40)))) for _ in range(4000)]
    raw = datasets.Dataset.from_dict({"text": docs})
    test = reference_test_documents(raw, seed=2357, test_size=0.01)
    ref_test = raw.train_test_split(test_size=0.01, seed=2357, shuffle=True)["test"]
    assert test["text"] == ref_test["text"] and len(test) == 40

    def reference_fn(batch):  # the reference's tokenize_function, with the toy tokenizer and 16-token rows
        ids = _toy_tokenize([t + "#" for t in batch["text"]])
        flat = [i for seq in ids for i in seq]
        return {"input_ids": [flat[k * 16:(k + 1) * 16] for k in range(len(flat) // 16)]}

    expected = ref_test.map(reference_fn, batched=True, batch_size=7, num_proc=2, remove_columns=["text"])
    got = reference_owt_rows(test, _toy_tokenize, "#", seq_len=16, num_shards=2, batch_size=7)
    np.testing.assert_array_equal(got, np.asarray(expected["input_ids"]))
    assert got.shape[1] == 16 and (got == 0).any()  # eos tokens are in the rows


def test_cli_refuses_a_bad_seed_and_a_missing_local_copy_before_reading(tmp_path, capsys):
    from lnfree_core.__main__ import main

    assert main(["data", "owt-reference", "--out", str(tmp_path / "o"), "--seed", "-1"]) == 2
    assert "--seed must be in" in capsys.readouterr().err
    assert main(["data", "owt-reference", "--out", str(tmp_path / "o"), "--raw", str(tmp_path / "none")]) == 2
    assert "no such folder" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
