"""The demo's shipped original (lnfree_core/demo/original.py): its recipe and data fingerprint, how a
build uses it (or, on other data, pretrains it and says why), and the rebuild command, at tiny size."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil

import numpy as np
import pytest
import torch

from lnfree_core.data.vocab_map import save_vocab_map
from lnfree_core.demo import demo_dataset_path, demo_model_path, demo_run_path, get_size
from lnfree_core.demo import original as orig
from lnfree_core.demo.build import build_demo, rebuild_original
from lnfree_core.demo.tokens import write_rows

TINY = get_size("tiny")


def test_data_fingerprint_hashes_the_token_values_not_the_files(tmp_path):
    rows = np.arange(6 * 8, dtype=np.int32).reshape(6, 8) % 7
    vocab = np.array([3, 11, 12, 40, 99, 1000, 50256])
    owt = demo_dataset_path("owt-demo", tmp_path)
    owt.mkdir(parents=True)
    write_rows(owt / "train.parquet", rows)
    save_vocab_map(tmp_path, vocab)
    fp = orig.data_fingerprint(tmp_path)
    assert fp == {"owt_demo_train_rows_sha256": hashlib.sha256(rows.astype("<i4").tobytes()).hexdigest(),
                  "owt_demo_train_shape": [6, 8],
                  "vocab_map_sha256": hashlib.sha256(vocab.astype("<i8").tobytes()).hexdigest(), "vocab_size": 7}
    rows[2, 3] += 1  # one token differs: another fingerprint
    write_rows(owt / "train.parquet", rows)
    assert orig.data_fingerprint(tmp_path)["owt_demo_train_rows_sha256"] != fp["owt_demo_train_rows_sha256"]


@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    """(folder, work root, recipe): a tiny 'shipped original' made by the rebuild command."""
    base = tmp_path_factory.mktemp("shipped")
    out, work = base / "original", base / "work"
    recipe = rebuild_original(out, work, TINY, threads=1)
    return out, work, recipe


def test_rebuild_writes_weights_config_vocab_and_a_recipe_that_describes_them(shipped):
    out, work, recipe = shipped
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors", "recipe.json",
                                                      "vocab_map.json"]
    assert json.loads((out / "recipe.json").read_text()) == recipe
    assert recipe["weights_sha256"] == hashlib.sha256((out / "model.safetensors").read_bytes()).hexdigest()
    assert recipe["settings"] == {k: getattr(TINY, k) for k in orig.RECIPE_FIELDS}
    assert recipe["data"] == orig.data_fingerprint(work)
    assert recipe["training"]["steps"] == TINY.pretrain_steps and recipe["training"]["source"] == "pretrained here"
    assert recipe["training"]["device"] == "cpu"  # the trainer's own report of where it ran
    assert recipe["command"].startswith("python -m lnfree_core demo pretrain-original")
    # the same bytes as the model the work root's pretrain stage made
    assert (out / "model.safetensors").read_bytes() == (demo_model_path("original", work) / "model.safetensors").read_bytes()


def test_a_build_on_the_same_data_installs_the_shipped_original_and_only_fine_tunes(shipped, monkeypatch):
    out, work, recipe = shipped
    monkeypatch.setattr(orig, "SHIPPED_DIR", out)
    size = dataclasses.replace(TINY, original="shipped")
    assert orig.shipped_status(work, size) == {"usable": True, "reason": ""}
    summary = build_demo(work, size, threads=1)  # datasets, filter, init reused from the rebuild
    installed = demo_model_path("original", work) / "model.safetensors"
    assert installed.read_bytes() == (out / "model.safetensors").read_bytes()
    assert not demo_run_path("original", work).exists()  # nothing pretrained here
    training = summary["models"]["original"]["training"]
    assert training["source"] == "shipped" and training["weights_sha256"] == recipe["weights_sha256"]
    assert (demo_model_path("ln-free", work) / "config.json").is_file()
    again = build_demo(work, size, threads=1)  # every stage reused (the pretrain stage made no run directory)
    assert again["stage_keys"] == summary["stage_keys"] and again["built"] == summary["built"]


def test_a_shipped_original_for_other_data_or_settings_is_not_used_and_the_build_says_why(shipped, tmp_path):
    out, work, recipe = shipped
    other = shutil.copytree(out, tmp_path / "other")
    r = json.loads((other / "recipe.json").read_text())
    r["data"]["owt_demo_train_rows_sha256"] = "0" * 64
    (other / "recipe.json").write_text(json.dumps(r))
    st = orig.shipped_status(work, dataclasses.replace(TINY, original="shipped"), other)
    assert not st["usable"] and "builds other demo data" in st["reason"]
    with pytest.warns(UserWarning, match="pretraining it here instead"):
        assert not orig.use_or_warn(work, TINY, other)
    st = orig.shipped_status(work, dataclasses.replace(TINY, pretrain_steps=TINY.pretrain_steps + 1), out)
    assert not st["usable"] and f"pretrain_steps {TINY.pretrain_steps}" in st["reason"]
    assert not orig.shipped_status(work, TINY, tmp_path / "none")["usable"]


def test_a_damaged_shipped_file_is_refused_with_the_fix(shipped, tmp_path):
    out, work, _ = shipped
    bad = shutil.copytree(out, tmp_path / "bad")
    data = bytearray((bad / "model.safetensors").read_bytes())
    data[-1] ^= 1
    (bad / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(ValueError, match="damaged or was replaced.*pretrain-original"):
        orig.install_shipped(tmp_path / "root", bad)


def test_cli_pretrain_original_rejects_bad_input_before_any_work(tmp_path, capsys):
    from lnfree_core.__main__ import main

    f = tmp_path / "file"
    f.write_text("x")
    assert main(["demo", "pretrain-original", "--out", str(f)]) == 2
    assert "is a file" in capsys.readouterr().err
    assert main(["demo", "pretrain-original", "--out", str(tmp_path / "o"), "--threads", "0"]) == 2
    assert not (tmp_path / "o").exists()
    capsys.readouterr()
    assert main(["demo", "pretrain-original", "--out", str(tmp_path / "o"), "--device", "tpu"]) == 2
    assert "--device" in capsys.readouterr().err
    if not torch.cuda.is_available():  # a GPU asked for where none is visible: refused before any work
        assert main(["demo", "pretrain-original", "--out", str(tmp_path / "o"), "--device", "cuda"]) == 2
        assert "no CUDA GPU is visible" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_the_shipped_original_is_the_findings_sizes_model_and_matches_its_recipe():
    """The file in the repository: its SHA-256, size limit, config and recipe agree with SIZES['findings']."""
    full = get_size("findings")
    recipe = orig.read_recipe()
    assert full.original == "shipped" and recipe is not None and recipe["size"] == "findings"
    assert get_size("full").original == "pretrain"  # the default size still pretrains its own
    assert recipe["settings"] == {k: getattr(full, k) for k in orig.RECIPE_FIELDS}
    weights = orig.SHIPPED_DIR / "model.safetensors"
    assert orig.file_sha256(weights) == recipe["weights_sha256"]
    assert weights.stat().st_size < 25 * 2 ** 20
    cfg = json.loads((orig.SHIPPED_DIR / "config.json").read_text())
    assert (cfg["n_layer"], cfg["n_embd"], cfg["n_head"], cfg["n_positions"]) == (
        full.n_layer, full.n_embd, full.n_head, full.seq_len)
    assert cfg["vocab_size"] == recipe["data"]["vocab_size"] and cfg["tie_word_embeddings"] == full.tie_embeddings
    assert recipe["training"]["steps"] == full.pretrain_steps
