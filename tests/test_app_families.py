"""The app's view of model families: the Home table, a model's family, and the Train page's data check."""

from __future__ import annotations

import json

from _tiny_families import tiny_family_model
from lnfree_core.method.adapters import ADAPTERS
from pages._common.ui_data.families import FAMILY_TABLE, data_fit_problem, families_frame, model_family


def test_family_table_covers_every_adapter():
    assert {r["model_type"] for r in FAMILY_TABLE} == set(ADAPTERS)
    frame = families_frame()
    assert list(frame["family"])[0] == "GPT-2" and len(frame) == len(ADAPTERS)


def test_model_family_from_config_run_and_examples(tmp_path, tiny_model_dir):
    path = tmp_path / "qwen3"
    tiny_family_model("qwen3").save_pretrained(str(path))
    assert model_family(str(path)) == "Qwen3"
    assert model_family(str(tiny_model_dir)) == "GPT-2"
    assert model_family("demo:ln-free") == "GPT-2"
    assert model_family("EleutherAI/pythia-70m") == "GPT-NeoX (Pythia)"
    run = tmp_path / "run" / "checkpoints" / "step_00000010"
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"model_type": "llama"}))
    assert model_family(str(tmp_path / "run")) == "Llama (SmolLM2, Llama-3.2)"
    (run / "config.json").write_text(json.dumps({"model_type": "mamba"}))
    assert model_family(str(tmp_path / "run")) == "unsupported (mamba)"


def test_data_fit_problem_flags_gpt2_ids_for_other_families(tmp_path, tiny_model_dir, tiny_dataset):
    path = tmp_path / "neox"
    tiny_family_model("gpt_neox").save_pretrained(str(path))
    assert "tokenized with GPT-2" in data_fit_problem(str(path), "owt")
    assert data_fit_problem(str(path), str(tiny_dataset)) is None  # local token ids: fine
    assert data_fit_problem(str(tiny_model_dir), "owt") is None  # GPT-2 reads GPT-2 ids
    assert "tokenized with GPT-2" in data_fit_problem("EleutherAI/pythia-70m", "pile")
