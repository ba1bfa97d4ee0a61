"""Name schemes (lnfree_core.names): plug-ins register `scheme:NAME` models and dataset names; the
core resolves them without knowing any plug-in, and an unregistered scheme fails with a clear message."""

from __future__ import annotations

import pytest

from lnfree_core import names
from lnfree_core.data.registry import DatasetNotFoundError, resolve_dataset
from lnfree_core.models import load_model


def test_unregistered_scheme_fails_with_a_message_naming_it():
    with pytest.raises(names.UnknownSchemeError, match="'nope:'"):
        names.resolve_model_name("nope:thing")
    with pytest.raises(ValueError, match="no plug-in registered the name scheme 'nope:'"):
        load_model("nope:thing")


def test_a_registered_scheme_resolves_models_and_datasets(tmp_path, monkeypatch, tiny_model_dir):
    monkeypatch.setattr(names, "_MODEL_SCHEMES", {})
    monkeypatch.setattr(names, "_DATASET_RESOLVERS", [])
    seen = []

    def resolve(name, *, must_exist=True):
        seen.append((name, must_exist))
        return tiny_model_dir

    names.register_model_scheme("mine", resolve)
    loaded = load_model("mine:small")
    assert seen == [("small", True)] and loaded.source == "mine" and loaded.spec == "mine:small"

    data = tmp_path / "mydata"
    data.mkdir()
    (data / "train.jsonl").write_text('{"input_ids": [1, 2, 3]}\n')
    names.register_dataset_names(lambda n: data if n == "my-data" else None)
    assert resolve_dataset("my-data").path == str(data)
    with pytest.raises(DatasetNotFoundError, match="unknown dataset"):
        resolve_dataset("other-data")


def test_demo_plugin_registers_on_import():
    import lnfree_core.demo  # noqa: F401

    assert "demo" in names._MODEL_SCHEMES
    assert names.split_scheme("demo:ln-free") == ("demo", "ln-free")
    assert names.split_scheme("openai-community/gpt2") is None and names.split_scheme("https://x/y") is None

