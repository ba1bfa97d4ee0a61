"""Demo-suite dataset names resolve like registry names (bare or with the demo: prefix)."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lnfree_core.data.registry import DatasetNotFoundError, resolve_dataset
from lnfree_core.data.sources import load_sequences


def test_demo_dataset_names_resolve_once_built(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DatasetNotFoundError, match="demo build"):
        resolve_dataset("pile-demo")
    folder = tmp_path / "lnfree_home" / "demo" / "datasets" / "pile-demo"
    folder.mkdir(parents=True)
    rows = [list(range(i, i + 16)) for i in range(4)]
    pq.write_table(pa.table({"input_ids": rows}), folder / "train.parquet")
    for name in ("pile-demo", "demo:pile-demo"):
        spec = resolve_dataset(name)
        seqs = load_sequences(spec, seq_len=16)
        assert seqs.tolist() == rows
    with pytest.raises(DatasetNotFoundError, match="unknown dataset"):
        resolve_dataset("demo:nothing")
