"""iter_sequences / load_sequences / dataset_info on local data, the stream engine, offline behaviour."""

import itertools
import json
import time

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lnfree_core.data import (
    EOT_ID,
    HubUnavailableError,
    dataset_info,
    iter_sequences,
    load_gpt2_tokenizer,
    load_sequences,
    resolve_dataset,
)
from lnfree_core.data.chunking import ChunkPlan, chunk_stream
from lnfree_core.data.local import ArrayRowStore
from lnfree_core.data.registry import DatasetSpec, SplitSpec
from lnfree_core.data.sources import stream_sequences

DOCS = [
    "The quick brown fox jumps over the lazy dog.",
    "Tabs\tand form feeds\x0c and\r\nWindows newlines.",
    "Paragraph one.\n\nParagraph two, with caf\u00e9 and \u00a0non-breaking spaces.",
    "Short.",
    "Numbers 1234567890 and symbols $%^&*() are tokens too.",
    "Last document of the corpus, it ends here.",
]


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path_factory):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path_factory.mktemp("hf_cache")))


def _write_parquet(path, column, rows):
    pq.write_table(pa.table({column: rows}), path)


def _write_jsonl(path, column, rows):
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps({column: r}) + "\n")


def _doc_ids():
    tok = load_gpt2_tokenizer()
    return [tok.encode(d) + [EOT_ID] for d in DOCS]


def _stack(seqs):
    return np.stack(list(seqs))


def test_text_is_tokenized_with_eot_concatenated_and_cut(tmp_path):
    _write_jsonl(tmp_path / "docs.jsonl", "text", DOCS)
    flat = np.concatenate(_doc_ids())
    got = _stack(iter_sequences(str(tmp_path / "docs.jsonl"), seq_len=16))
    n = len(flat) // 16
    assert got.shape == (n, 16) and got.dtype == np.int64
    np.testing.assert_array_equal(got, flat[:n * 16].reshape(n, 16))


def test_parquet_jsonl_txt_and_ids_give_the_same_sequences(tmp_path):
    ids = _doc_ids()
    assert max(len(r) for r in ids) < 24  # every document is shorter than seq_len: all rows are packed
    _write_parquet(tmp_path / "text.parquet", "text", DOCS)
    _write_jsonl(tmp_path / "text.jsonl", "text", DOCS)
    _write_parquet(tmp_path / "ids.parquet", "input_ids", ids)
    _write_jsonl(tmp_path / "ids.jsonl", "input_ids", ids)
    txt = tmp_path / "txt"
    txt.mkdir()
    for i, d in enumerate(DOCS):
        (txt / f"doc{i}.txt").write_bytes(d.encode("utf-8"))  # bytes: keep \r\n as is
    results = {p: _stack(iter_sequences(str(tmp_path / p), seq_len=24))
               for p in ["text.parquet", "text.jsonl", "ids.parquet", "ids.jsonl", "txt"]}
    ref = results.pop("ids.parquet")
    assert len(ref) == sum(map(len, ids)) // 24 >= 3
    for name, got in results.items():
        np.testing.assert_array_equal(got, ref, err_msg=name)


def test_long_rows_are_cut_short_rows_packed(tmp_path):
    rows = [list(range(100, 105)), [1, 2, 3], list(range(200, 210)), [4, 5], list(range(300, 307)), [6, 7, 8, 9]]
    _write_parquet(tmp_path / "ids.parquet", "input_ids", rows)
    got = _stack(iter_sequences(str(tmp_path / "ids.parquet"), seq_len=4)).tolist()
    assert got == [[100, 101, 102, 103], [200, 201, 202, 203], [204, 205, 206, 207],
                   [1, 2, 3, 4], [300, 301, 302, 303], [6, 7, 8, 9]]


@pytest.mark.parametrize("pack_all", [False, True])
@pytest.mark.parametrize("seed", range(6))
def test_plan_matches_stream_engine(seed, pack_all):
    rng = np.random.default_rng(seed)
    t = int(rng.integers(1, 9))
    lengths = rng.integers(0, 3 * t, size=int(rng.integers(0, 40)))
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    store = ArrayRowStore(np.arange(offsets[-1], dtype=np.int32), offsets)
    rows = [store.flat[offsets[i]:offsets[i + 1]] for i in range(len(lengths))]
    expected = [s.tolist() for s in chunk_stream(rows, t, pack_all=pack_all)]
    plan = ChunkPlan.build(lengths, t, pack_all=pack_all)
    assert [plan.read(store, k).tolist() for k in range(len(plan))] == expected


@pytest.mark.parametrize("shuffle", [False, True])
def test_skip_resumes_exactly(tmp_path, shuffle):
    rng = np.random.default_rng(0)
    rows = [rng.integers(0, 50257, size=int(n)).tolist() for n in rng.integers(1, 40, size=60)]
    _write_parquet(tmp_path / "ids.parquet", "input_ids", rows)
    path = str(tmp_path / "ids.parquet")
    full = _stack(iter_sequences(path, seq_len=16, shuffle=shuffle, seed=3))
    assert len(full) > 20
    again = _stack(iter_sequences(path, seq_len=16, shuffle=shuffle, seed=3))
    np.testing.assert_array_equal(full, again)
    for k in [0, 1, 7, len(full) - 1, len(full)]:
        resumed = list(iter_sequences(path, seq_len=16, shuffle=shuffle, seed=3, skip=k))
        assert len(resumed) == len(full) - k
        if resumed:
            np.testing.assert_array_equal(np.stack(resumed), full[k:])
    if shuffle:
        plain = _stack(iter_sequences(path, seq_len=16))
        other_seed = _stack(iter_sequences(path, seq_len=16, shuffle=True, seed=4))
        assert not np.array_equal(full, plain) and not np.array_equal(full, other_seed)
        assert sorted(map(tuple, full)) == sorted(map(tuple, plain))  # same sequences, new order


def _fixed_rows(n_rows, row_len, seed=0):
    return np.random.default_rng(seed).integers(0, 50257, size=(n_rows, row_len)).tolist()


def _stream_spec(row_len, start=0, stop=None):
    return DatasetSpec(name="fake-hub", source="hub", format="hub", column="input_ids",
                       splits=(SplitSpec("train", hub_split="train", start=start, stop=stop),),
                       description="", size="", hub_id="fake/hub", row_len=row_len)


@pytest.mark.parametrize("shuffle", [False, True])
def test_stream_engine_skip_and_split_range(tmp_path, shuffle):
    rows = _fixed_rows(40, 32)
    _write_parquet(tmp_path / "rows.parquet", "input_ids", rows)
    streamed = datasets.load_dataset("parquet", data_files=str(tmp_path / "rows.parquet"), split="train",
                                     streaming=True)
    spec = _stream_spec(row_len=32, start=5, stop=35)
    split = spec.split("train")

    def run(skip):
        return _stack(stream_sequences(streamed, spec, split, seq_len=16, skip=skip, shuffle=shuffle, seed=1,
                                       shuffle_buffer=8))

    full = run(0)
    assert full.shape == (60, 16)  # rows 5..34, two sequences each
    if not shuffle:
        np.testing.assert_array_equal(full, np.asarray(rows[5:35]).reshape(60, 16))
    else:
        assert sorted(map(tuple, full)) == sorted(map(tuple, np.asarray(rows[5:35]).reshape(60, 16)))
    for k in [1, 2, 7, 59]:
        np.testing.assert_array_equal(run(k), full[k:])


def test_stream_engine_rejects_rows_that_break_the_declared_length(tmp_path):
    _write_parquet(tmp_path / "rows.parquet", "input_ids", [[1] * 8, [2] * 5])
    streamed = datasets.load_dataset("parquet", data_files=str(tmp_path / "rows.parquet"), split="train",
                                     streaming=True)
    spec = _stream_spec(row_len=8)
    with pytest.raises(ValueError, match="row 1 has 5 tokens"):
        list(stream_sequences(streamed, spec, spec.split("train"), seq_len=4))


def test_load_sequences_and_info(tmp_path):
    folder = tmp_path / "ds"
    folder.mkdir()
    _write_parquet(folder / "train.parquet", "input_ids", _fixed_rows(10, 32, seed=1))
    _write_parquet(folder / "validation.parquet", "input_ids", _fixed_rows(3, 32, seed=2))
    val = load_sequences(str(folder), seq_len=16)  # default: the evaluation (validation) split
    assert val.shape == (6, 16) and val.dtype == np.int32
    np.testing.assert_array_equal(val, np.asarray(_fixed_rows(3, 32, seed=2)).reshape(6, 16))
    assert load_sequences(str(folder), split="train", seq_len=32, n_sequences=4).shape == (4, 32)
    packed = load_sequences(str(folder), split="validation", seq_len=64)  # 96 tokens: one sequence
    np.testing.assert_array_equal(packed, np.asarray(_fixed_rows(3, 32, seed=2))[:2].reshape(1, 64))
    assert load_sequences(str(folder), split="validation", seq_len=128).shape == (0, 128)
    info = dataset_info(str(folder), seq_len=16)
    assert info["source"] == "local" and info["column"] == "input_ids" and info["eval_split"] == "validation"
    assert info["splits"]["train"] | {"files": None} == {"rows": 10, "tokens": 320, "sequences": 20, "files": None}
    owt = dataset_info("owt")  # from the registry: no network needed
    assert owt["splits"]["validation"]["tokens"] == 4_505_600 and owt["splits"]["train"]["tokens"] is None


def test_save_to_disk_dataset_reads_like_parquet(tmp_path):
    rows = _fixed_rows(5, 24, seed=5)
    datasets.Dataset.from_dict({"input_ids": rows}).save_to_disk(str(tmp_path / "saved"))
    _write_parquet(tmp_path / "same.parquet", "input_ids", rows)
    np.testing.assert_array_equal(load_sequences(str(tmp_path / "saved"), seq_len=8),
                                  load_sequences(str(tmp_path / "same.parquet"), seq_len=8))


@pytest.mark.parametrize("name", ["owt", "pile", "pile-filtered"])
def test_hub_dataset_offline_fails_fast_with_instructions(name):
    t0 = time.monotonic()
    with pytest.raises(HubUnavailableError) as err:
        iter_sequences(name, split="train")
    with pytest.raises(HubUnavailableError):
        load_sequences(name)
    assert time.monotonic() - t0 < 5
    msg = str(err.value)
    assert resolve_dataset(name).hub_id in msg
    assert "HF_HUB_OFFLINE" in msg and "local path" in msg and "python -m lnfree_core demo build" in msg


def test_bad_arguments_fail_at_the_call(tmp_path):
    _write_parquet(tmp_path / "ids.parquet", "input_ids", [[1, 2, 3]])
    with pytest.raises(ValueError, match="no split 'validation'"):
        iter_sequences(str(tmp_path / "ids.parquet"), split="validation")
    with pytest.raises(ValueError, match="seq_len"):
        iter_sequences(str(tmp_path / "ids.parquet"), seq_len=0)
    with pytest.raises(ValueError, match="pass n_sequences"):
        load_sequences("owt", split="train")
    assert list(itertools.islice(iter_sequences(str(tmp_path / "ids.parquet"), seq_len=3), 5))[0].tolist() == [1, 2, 3]
