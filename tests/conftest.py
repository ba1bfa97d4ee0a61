"""Shared fixtures: tiny GPT-2 models and token datasets made on the spot (no downloads)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import lnfree_core.demo  # noqa: F401  (plug-in: registers the demo: model and dataset names, as the entry points do)
from _tiny import tiny_model


@pytest.fixture
def tiny_model_dir(tmp_path):
    """A saved tiny GPT-2 (2 layers, 32 wide, vocab 128) in a local HF folder."""
    path = tmp_path / "tiny-gpt2"
    tiny_model().save_pretrained(str(path))
    return path


@pytest.fixture
def tiny_dataset(tmp_path):
    """A jsonl file of 256 rows of 64 token ids (vocab 128) with some structure to learn."""
    rng = np.random.default_rng(0)
    path = tmp_path / "tokens.jsonl"
    with open(path, "w") as fh:
        for _ in range(256):
            start = int(rng.integers(0, 100))
            row = [(start + 3 * i + int(rng.integers(0, 2))) % 127 for i in range(64)]
            fh.write(json.dumps({"input_ids": row}) + "\n")
    return path
