"""Which data a model can read: every registry and demo dataset holds GPT-2 token ids, and text data
is tokenized with GPT-2's tokenizer; a model of another family (Pythia, Llama, Qwen) reads other ids,
so it needs a local file or folder of `input_ids` made with its own tokenizer."""

from __future__ import annotations

import os

from .registry import _lookup_name, resolve_dataset


class TokenizerMismatchError(ValueError):
    """GPT-2-tokenized data for a model with another tokenizer; the message says what to give instead."""


def check_tokenizer_fit(model_type: str, dataset: str) -> None:
    """Raise TokenizerMismatchError when `dataset` holds GPT-2 ids but the model is not a GPT-2."""
    if model_type == "gpt2":
        return
    spec = resolve_dataset(dataset)
    local_path = os.path.exists(os.path.expanduser(str(dataset))) and _lookup_name(str(dataset)) is None
    if spec.column != "input_ids" or not local_path:
        raise TokenizerMismatchError(
            f"dataset {dataset!r} is tokenized with GPT-2's tokenizer, but the model is a {model_type} model with "
            "its own vocabulary. Tokenize your corpus with the model's tokenizer into a local .jsonl/.parquet "
            "file (or save_to_disk folder) with an `input_ids` column, and pass that path as the dataset."
        )
