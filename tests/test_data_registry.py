"""Dataset names and local path rules resolve to the right spec, with clear errors otherwise."""

import json

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lnfree_core.data.registry import DatasetNotFoundError, list_datasets, resolve_dataset


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path_factory):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path_factory.mktemp("hf_cache")))


def _parquet(path, rows, column="input_ids"):
    pq.write_table(pa.table({column: rows}), path)


def test_known_names_and_aliases():
    assert [s.name for s in list_datasets()] == ["owt", "pile", "pile-filtered"]
    owt = resolve_dataset("owt")
    assert owt.hub_id == "apollo-research/Skylion007-openwebtext-tokenizer-gpt2"
    assert owt.column == "input_ids" and owt.row_len == 1024
    val, train = owt.split("validation"), owt.split("train")
    assert (val.hub_split, val.start, val.stop) == ("train", 0, 4400)
    assert (train.hub_split, train.start, train.stop) == ("train", 4400, None)
    assert val.stop * 1024 == 4_505_600  # ~4.5M held-out tokens, disjoint from training rows
    assert owt.eval_split == "validation" and owt.split("val") is val
    assert resolve_dataset("openwebtext") is owt
    assert resolve_dataset("apollo-research/monology-pile-uncopyrighted-tokenizer-gpt2").name == "pile"
    assert resolve_dataset("pile").eval_sequences == 10_000
    assert resolve_dataset("pile-filtered").hub_id == "lucabaroni/apollo-pile-filtered-10k"
    with pytest.raises(ValueError, match="splits: train, validation"):
        owt.split("test")


def test_unknown_name_lists_known_names():
    with pytest.raises(DatasetNotFoundError, match=r"owt, pile, pile-filtered"):
        resolve_dataset("no-such-dataset")


def test_single_files(tmp_path):
    _parquet(tmp_path / "ids.parquet", [[1, 2], [3]])
    spec = resolve_dataset(tmp_path / "ids.parquet")
    assert (spec.source, spec.format, spec.column, spec.split_names) == ("local", "parquet", "input_ids", ["train"])
    assert spec.split("train").n_rows == 2
    (tmp_path / "docs.jsonl").write_text('{"text": "a"}\n{"text": "b"}\n')
    assert resolve_dataset(str(tmp_path / "docs.jsonl")).column == "text"
    (tmp_path / "book.txt").write_text("hello")
    assert resolve_dataset(str(tmp_path / "book.txt")).format == "txt"
    (tmp_path / "bad.jsonl").write_text('{"tokens": [1]}\n')
    with pytest.raises(ValueError, match="no 'input_ids' or 'text' column"):
        resolve_dataset(str(tmp_path / "bad.jsonl"))
    (tmp_path / "x.csv").write_text("a\n")
    with pytest.raises(ValueError, match="unsupported file type"):
        resolve_dataset(str(tmp_path / "x.csv"))


def test_folder_with_split_files(tmp_path):
    _parquet(tmp_path / "train-00001-of-00002.parquet", [[3]])
    _parquet(tmp_path / "train-00000-of-00002.parquet", [[1], [2]])
    _parquet(tmp_path / "val.parquet", [[9]])
    (tmp_path / "tokens_removed.json").write_text("[]")  # metadata is ignored
    spec = resolve_dataset(str(tmp_path))
    assert spec.split_names == ["train", "validation"]
    assert [p.rsplit("/", 1)[1] for p in spec.split("train").files] == [
        "train-00000-of-00002.parquet", "train-00001-of-00002.parquet"]
    assert spec.split("train").n_rows == 3
    assert spec.eval_split == "validation"


def test_folder_rules(tmp_path):
    plain = tmp_path / "plain"
    (plain / "data").mkdir(parents=True)
    (plain / "data" / "b.txt").write_text("b")
    (plain / "data" / "a.txt").write_text("a")
    spec = resolve_dataset(str(plain))
    assert spec.split_names == ["train"] and spec.column == "text"
    assert [p.rsplit("/", 1)[1] for p in spec.split("train").files] == ["a.txt", "b.txt"]


@pytest.mark.parametrize("files,error", [
    ({"train.txt": "a", "notes.txt": "b"}, "mixes split files"),
    ({"a.txt": "a", "b.jsonl": '{"text": "b"}\n'}, "several formats"),
    ({}, "no data files"),
], ids=["mixed", "formats", "empty"])
def test_folder_rules_refuse(tmp_path, files, error):
    folder = tmp_path / "folder"
    folder.mkdir()
    for name, text in files.items():
        (folder / name).write_text(text)
    with pytest.raises(ValueError, match=error):
        resolve_dataset(str(folder))


def test_save_to_disk_folders(tmp_path):
    ds = datasets.Dataset.from_dict({"input_ids": [[1, 2, 3]]})
    ds.save_to_disk(str(tmp_path / "single"))
    single = resolve_dataset(str(tmp_path / "single"))
    assert (single.format, single.split_names, single.column) == ("arrow", ["train"], "input_ids")
    datasets.DatasetDict({"train": ds, "validation": datasets.Dataset.from_dict({"text": ["x"]})}) \
        .save_to_disk(str(tmp_path / "dict"))
    dd = resolve_dataset(str(tmp_path / "dict"))
    assert dd.split_names == ["train", "validation"] and dd.eval_split == "validation"
    assert json.loads((tmp_path / "dict" / "dataset_dict.json").read_text())["splits"] == ["train", "validation"]


def test_registry_name_wins_over_same_named_folder(tmp_path, monkeypatch):
    (tmp_path / "owt").mkdir()
    _parquet(tmp_path / "owt" / "train.parquet", [[1]])
    monkeypatch.chdir(tmp_path)
    assert resolve_dataset("owt").source == "hub"
    assert resolve_dataset("./owt").source == "local"
