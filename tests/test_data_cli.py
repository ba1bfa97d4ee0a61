"""`python -m lnfree_core data list | info | filter` (argparse harness + one real subprocess)."""

import argparse
import json
import os
import subprocess
import sys

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lnfree_core.cli import data as data_cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path_factory):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path_factory.mktemp("hf_cache")))


def _cli(argv):
    parser = argparse.ArgumentParser(prog="lnfree")
    data_cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def test_list(capsys):
    assert _cli(["data", "list"]) == 0
    out = capsys.readouterr().out
    assert "apollo-research/Skylion007-openwebtext-tokenizer-gpt2" in out and "pile-filtered" in out
    assert _cli(["data", "list", "--json"]) == 0
    names = [d["name"] for d in json.loads(capsys.readouterr().out)]
    assert names == ["owt", "pile", "pile-filtered"]


def test_info_local_hub_and_unknown(tmp_path, capsys):
    pq.write_table(pa.table({"input_ids": [[1] * 2048, [2] * 1024]}), tmp_path / "train.parquet")
    assert _cli(["data", "info", str(tmp_path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["splits"]["train"]["sequences"] == 3 and info["splits"]["train"]["tokens"] == 3072
    assert _cli(["data", "info", str(tmp_path)]) == 0
    assert "3,072 tokens" in capsys.readouterr().out
    assert _cli(["data", "info", "owt"]) == 0  # registry facts only: works offline
    assert "validation (evaluation): 4,400 rows" in capsys.readouterr().out
    assert _cli(["data", "info", "nope"]) == 2
    assert "unknown dataset 'nope'" in capsys.readouterr().err


def test_data_without_subcommand_prints_usage(capsys):
    assert _cli(["data"]) == 2
    assert "filter" in capsys.readouterr().err


@pytest.mark.skipif(not os.path.exists(os.path.join(ROOT, "lnfree_core", "__main__.py")),
                    reason="the CLI dispatcher lnfree_core/__main__.py is not there yet")
def test_module_entry_point_help():
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    for argv in (["data", "--help"], ["data", "filter", "--help"]):
        res = subprocess.run([sys.executable, "-m", "lnfree_core", *argv], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, res.stderr
        assert "--reference" in res.stdout if "filter" in argv else "info" in res.stdout
