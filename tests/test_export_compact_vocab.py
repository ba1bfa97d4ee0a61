"""An export of a compact-vocabulary model (the demo suite's) loads and generates with its model card's
own snippet: it ships a tokenizer whose ids are the model's (it used to ship GPT-2's 50,257-token
tokenizer, and generate() raised IndexError), and its card names no base_model the Hub cannot resolve."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from _tiny import tiny_model
from lnfree_core.data.tokenizer import EOT_ID, build_offline_gpt2_tokenizer
from lnfree_core.data.vocab_map import save_vocab_map

TEXT = ("The LayerNorm was removed one block at a time while the model kept training on the same text. "
        "After the last removal the model ran without any normalisation at all, and its loss barely moved.")


@pytest.fixture(scope="module")
def compact_export(tmp_path_factory):
    from lnfree_core.export import export_model

    root = tmp_path_factory.mktemp("compact")
    gpt2 = build_offline_gpt2_tokenizer()
    vmap = np.array(sorted(set(gpt2(TEXT)["input_ids"]) | {EOT_ID}), dtype=np.int64)  # EOT last, as the demo's
    src = root / "model"
    tiny_model(seed=3, vocab_size=len(vmap), n_positions=64).save_pretrained(str(src))
    save_vocab_map(src, vmap)
    out = root / "export"
    export_model(str(src), out, allow_live=True, repo_name="someone/compact-demo")
    return out, vmap, gpt2


def test_card_snippet_loads_and_generates(compact_export):
    out, vmap, _ = compact_export
    card = (out / "README.md").read_text()
    code = re.search(r"```python\n(.*?)```", card, re.S).group(1).replace("someone/compact-demo", str(out))
    scope: dict = {}
    exec(code, scope)  # the card's own snippet, with the local folder for the repo id
    model, tokenizer = scope["model"], scope["tokenizer"]
    enc = tokenizer("The model kept training", return_tensors="pt")
    assert int(enc["input_ids"].max()) < len(vmap)
    torch.manual_seed(0)
    gen = model.generate(**enc, max_new_tokens=6, do_sample=False, pad_token_id=tokenizer.eos_token_id)
    assert gen.shape == (1, enc["input_ids"].shape[1] + 6)
    assert isinstance(tokenizer.decode(gen[0]), str)
    # Unknown text (no compact token spells it) becomes <|endoftext|>, never an id outside the model.
    ids = tokenizer("zqxj \u2603 Ω")["input_ids"]
    assert ids and max(ids) < len(vmap) and len(vmap) - 1 in ids


def test_compact_tokenizer_ids_are_gpt2_ids_through_the_map(compact_export):
    """On text made of compact tokens, the shipped tokenizer's ids mapped through vocab_map.json equal
    GPT-2's own tokenisation on at least 95% of tokens (a unigram segmentation, not BPE: see
    lnfree_core.data.compact_tokenizer), and decoding gives the text back exactly."""
    import difflib

    from transformers import AutoTokenizer

    out, vmap, gpt2 = compact_export
    tok = AutoTokenizer.from_pretrained(str(out))
    ids = tok(TEXT)["input_ids"]
    assert tok.decode(ids) == TEXT
    want = gpt2(TEXT)["input_ids"]
    got = [int(vmap[i]) for i in ids]
    ratio = difflib.SequenceMatcher(None, got, want, autojunk=False).ratio()
    assert ratio >= 0.95, ratio
    assert (out / "vocab_map.json").is_file()


def test_card_lists_no_unresolvable_base_model():
    from lnfree_core.model_card import render_model_card

    for base in ("demo:original", "/home/me/models/original", "./models/original"):
        card = render_model_card(repo_name="x/y", base_model=base, mode="ln-free", schedule=None)
        front = card.split("---")[1]
        assert "base_model" not in front, (base, front)
    card = render_model_card(repo_name="x/y", base_model="openai-community/gpt2", mode="ln-free", schedule=None)
    assert "base_model:\n- openai-community/gpt2" in card.split("---")[1]
