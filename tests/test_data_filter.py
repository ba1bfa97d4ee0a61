"""The Pile-filtered builder on a crafted reference/target pair: exact tokens, counts and kept rows."""

import argparse
import json

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lnfree_core.cli import data as data_cli
from lnfree_core.data import build_filtered, dataset_info, iter_sequences, resolve_dataset

REFERENCE = [list(range(1, 9)), list(range(9, 17)), [2] * 8, [3] * 8, [4] * 8, [5] * 8,
             [197] * 8]  # the last row is beyond --scan 6: 197 stays "absent from the reference"
TARGET = [
    [1, 2, 3, 4, 5, 6, 7, 8],        # kept
    [1, 197, 197, 2, 3, 4, 5, 6],    # \t twice
    [628, 1, 2, 3, 4, 5, 6, 7],      # \n\n
    [9, 10, 11, 12, 13, 14, 15, 16],  # kept
    [197, 200, 1, 1, 1, 1, 1, 1],    # \t and \x0c
    [2, 2, 2, 2, 2, 2, 2, 2],        # kept
    [300, 300, 1, 1, 1, 1, 1, 1],    # beyond --scan 6: neither counted nor written
]
KEPT = [TARGET[0], TARGET[3], TARGET[5]]
EXPECTED = [
    {"token_id": 197, "token": "\t", "repr": "'\\t'", "count": 3, "sequences": 2},
    {"token_id": 200, "token": "\x0c", "repr": "'\\x0c'", "count": 1, "sequences": 1},
    {"token_id": 628, "token": "\n\n", "repr": "'\\n\\n'", "count": 1, "sequences": 1},
]


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path_factory):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path_factory.mktemp("hf_cache")))


@pytest.fixture
def pair(tmp_path):
    ref = tmp_path / "reference.jsonl"
    ref.write_text("".join(json.dumps({"input_ids": r}) + "\n" for r in REFERENCE))
    tgt = tmp_path / "target"
    tgt.mkdir()
    pq.write_table(pa.table({"input_ids": TARGET}), tgt / "train.parquet")
    return str(ref), str(tgt)


def test_removed_tokens_counts_and_kept_sequences(pair, tmp_path):
    ref, tgt = pair
    out = tmp_path / "filtered"
    report = build_filtered(ref, tgt, out, scan=6, seq_len=8)
    assert (report.reference_sequences, report.target_sequences, report.kept_sequences) == (6, 6, 3)
    assert [t.token_id for t in report.removed_tokens] == [197, 200, 628]
    assert report.to_dict()["removed_tokens"] == EXPECTED
    assert json.loads((out / "tokens_removed.json").read_text()) == EXPECTED
    saved = json.loads((out / "filter_report.json").read_text())
    assert saved["kept_sequences"] == 3 and saved["scan"] == 6 and saved["removed_tokens"] == EXPECTED
    table = report.table()
    assert table.splitlines()[1].split() == ["197", "'\\t'", "3", "2"]

    # The output is a dataset for this project and for plain `datasets`.
    spec = resolve_dataset(str(out))
    assert (spec.format, spec.column, spec.split_names) == ("parquet", "input_ids", ["train"])
    assert [s.tolist() for s in iter_sequences(str(out), seq_len=8)] == KEPT
    plain = datasets.load_dataset("parquet", data_files=str(out / "train.parquet"), split="train")
    assert plain["input_ids"] == KEPT
    assert "Filtered" in dataset_info(str(out), seq_len=8)["description"]
    assert not [p for p in out.iterdir() if p.name.startswith(".") or p.suffix == ".tmp"]


def test_keep_limit_and_seq_len(pair, tmp_path):
    ref, tgt = pair
    report = build_filtered(ref, tgt, tmp_path / "two", scan=6, seq_len=8, keep=2)
    assert report.kept_sequences == 2 and [t.count for t in report.removed_tokens] == [3, 1, 1]
    assert [s.tolist() for s in iter_sequences(str(tmp_path / "two"), seq_len=8)] == KEPT[:2]
    # seq_len 4: every 8-token row gives two sequences; the scan counts sequences, not rows.
    halves = build_filtered(ref, tgt, tmp_path / "halves", scan=12, seq_len=4)
    assert halves.target_sequences == 12
    assert {t.token_id: t.sequences for t in halves.removed_tokens} == {197: 2, 200: 1, 628: 1}
    kept = [s.tolist() for s in iter_sequences(str(tmp_path / "halves"), seq_len=4)]
    expected = [h for row in TARGET[:6] for h in (row[:4], row[4:]) if not {197, 200, 628} & set(h)]
    assert kept == expected and [3, 4, 5, 6] in kept  # the clean half of a dirty row survives


def test_nothing_removed_keeps_everything(tmp_path):
    rows = np.arange(64).reshape(8, 8).tolist()
    pq.write_table(pa.table({"input_ids": rows}), tmp_path / "same.parquet")
    report = build_filtered(str(tmp_path / "same.parquet"), str(tmp_path / "same.parquet"), tmp_path / "out",
                            scan=100, seq_len=8)
    assert report.removed_tokens == [] and report.kept_sequences == 8 and report.target_sequences == 8
    assert [s.tolist() for s in iter_sequences(str(tmp_path / "out"), seq_len=8)] == rows


def test_refuses_an_output_folder_with_other_data(pair, tmp_path):
    ref, tgt = pair
    out = tmp_path / "busy"
    out.mkdir()
    (out / "validation.parquet").write_bytes(b"")
    with pytest.raises(ValueError, match="other data files"):
        build_filtered(ref, tgt, out, scan=6, seq_len=8)


def _cli(argv):
    parser = argparse.ArgumentParser(prog="lnfree")
    data_cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_filter_json_and_table(pair, tmp_path, capsys):
    ref, tgt = pair
    assert _cli(["data", "filter", "--reference", ref, "--target", tgt, "--out", str(tmp_path / "o1"),
                 "--scan", "6", "--seq-len", "8", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["removed_tokens"] == EXPECTED and printed["kept_sequences"] == 3
    assert _cli(["data", "filter", "--reference", ref, "--target", tgt, "--out", str(tmp_path / "o2"),
                 "--scan", "6", "--seq-len", "8"]) == 0
    out = capsys.readouterr().out
    assert "'\\t'" in out and "kept 3 of 6 sequences" in out
    assert _cli(["data", "filter", "--reference", "nope", "--target", tgt, "--out", str(tmp_path / "o3")]) == 2
    assert "owt, pile, pile-filtered" in capsys.readouterr().err
