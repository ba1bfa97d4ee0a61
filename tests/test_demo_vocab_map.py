"""Compact vocabulary maps (lnfree_core.data.vocab_map): files, lookups, id mapping and decoding."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml

from lnfree_core.data.tokenizer import load_gpt2_tokenizer
from lnfree_core.data.vocab_map import (VOCAB_MAP_FILE, decode_tokens, from_gpt2_ids, load_vocab_map,
                                        save_vocab_map, to_gpt2_ids)

VMAP = np.array([9, 197, 200, 262, 464, 50256])  # compact id c -> GPT-2 id VMAP[c]


def test_save_and_load_round_trip(tmp_path):
    path = save_vocab_map(tmp_path, VMAP)
    assert path == tmp_path / VOCAB_MAP_FILE
    assert json.loads(path.read_text()) == VMAP.tolist()
    np.testing.assert_array_equal(load_vocab_map(tmp_path), VMAP)
    np.testing.assert_array_equal(load_vocab_map(path), VMAP)


@pytest.mark.parametrize("bad", [[1, 1, 2], [0, 50257], [-1, 3], []])
def test_invalid_maps_are_refused(tmp_path, bad):
    with pytest.raises(ValueError):
        save_vocab_map(tmp_path, bad)
    (tmp_path / VOCAB_MAP_FILE).write_text(json.dumps(bad))
    with pytest.raises(ValueError):
        load_vocab_map(tmp_path)


def test_no_map_means_gpt2_ids(tmp_path, tiny_model_dir):
    assert load_vocab_map(tmp_path) is None
    assert load_vocab_map(tiny_model_dir) is None
    assert load_vocab_map("gpt2") is None  # a Hub id: looked up without any network access
    np.testing.assert_array_equal(to_gpt2_ids([5, 7], None), [5, 7])


def test_map_found_from_data_file_checkpoint_run_and_export(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.parquet").write_bytes(b"")
    save_vocab_map(data, VMAP)
    np.testing.assert_array_equal(load_vocab_map(data / "train.parquet"), VMAP)

    base = tmp_path / "base"
    base.mkdir()
    save_vocab_map(base, VMAP)
    run = tmp_path / "run"
    ckpt = run / "checkpoints" / "step_00000004"
    ckpt.mkdir(parents=True)
    (ckpt / "fakeln.json").write_text("{}")
    (run / "config.yaml").write_text(yaml.safe_dump({"model": str(base), "dataset": "owt", "out": str(run)}))
    np.testing.assert_array_equal(load_vocab_map(run), VMAP)  # via config.yaml's model
    np.testing.assert_array_equal(load_vocab_map(ckpt), VMAP)  # a checkpoint: its run's
    np.testing.assert_array_equal(load_vocab_map(f"{run}@4"), VMAP)

    export = tmp_path / "export"
    export.mkdir()
    (export / "lnfree_export.json").write_text(json.dumps({"source": str(run)}))
    np.testing.assert_array_equal(load_vocab_map(export), VMAP)  # an export: its source run's

    (run / "config.yaml").write_text(yaml.safe_dump({"model": "gpt2", "dataset": str(data), "out": str(run)}))
    np.testing.assert_array_equal(load_vocab_map(run), VMAP)  # base has none: the dataset's


def test_to_and_from_gpt2_ids_are_inverse():
    compact = np.array([[0, 5, 3], [1, 2, 4]])
    gpt2 = to_gpt2_ids(torch.tensor(compact), VMAP)
    np.testing.assert_array_equal(gpt2, [[9, 50256, 262], [197, 200, 464]])
    np.testing.assert_array_equal(from_gpt2_ids(gpt2, VMAP), compact)
    with pytest.raises(ValueError, match="not in the compact vocabulary"):
        from_gpt2_ids([9, 11], VMAP)
    with pytest.raises(ValueError, match="outside the compact vocabulary"):
        to_gpt2_ids([6], VMAP)


def test_decode_tokens_shows_real_text():
    tok = load_gpt2_tokenizer(offline=True)
    assert decode_tokens([1, 2, 3, 5], tok, VMAP) == ["\t", "\x0c", " the", "<|endoftext|>"]
    assert decode_tokens([197, 262], tok) == ["\t", " the"]
