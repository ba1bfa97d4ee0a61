"""The result cache: keys follow the weights, data and settings; a hit never loads the model."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

import lnfree_core.models as models
from lnfree_core.analysis.cache import AnalysisCache, key_hash, model_identity
from lnfree_core.analysis.cached import (DataSpec, EmptyDataError, ce_eval, confidence_eval, dla_eval,
                                         first_token_eval)
from lnfree_core.analysis.ce import per_token_ce
from lnfree_core.analysis.confidence import confidence_scores
from lnfree_core.analysis.dla import head_attribution
from lnfree_core.analysis.first_token import first_token_stats
from lnfree_core.analysis.sinks import sink_rate
from test_analysis_support import tiny_gpt2, tokens


@pytest.fixture
def model_dir(tmp_path):
    path = tmp_path / "tiny"
    tiny_gpt2(seed=21).save_pretrained(str(path))
    return path


def _forbid_loading(monkeypatch):
    def boom(*a, **k):
        raise AssertionError("the model was loaded although the result is cached")
    monkeypatch.setattr(models, "load_model", boom)


def test_ce_eval_caches_and_hits_without_loading(model_dir, tmp_path, monkeypatch):
    toks = tokens(n=5, seq_len=12, seed=22)
    data = DataSpec("mem", tokens=toks)
    cache = tmp_path / "cache"
    res = ce_eval(str(model_dir), data, cache_dir=cache, device="cpu", batch_size=2)
    ref = per_token_ce(models.load_model(str(model_dir)).model, toks).numpy()
    # another batch size blocks the matmuls differently: float32 results may differ in the last bit
    np.testing.assert_allclose(res.losses, ref, rtol=2e-7, atol=0)
    np.testing.assert_array_equal(res.tokens, toks)
    assert res.tokens.dtype == np.uint16 and res.losses.dtype == np.float32
    assert res.summary.mean == pytest.approx(ref.astype(np.float64).mean())
    entries = list((cache / "ce").iterdir())
    assert len(entries) == 1 and sorted(p.name for p in entries[0].iterdir()) == [
        "key.json", "losses.npy", "result.json", "tokens.npy"]

    _forbid_loading(monkeypatch)
    calls = []
    hit = ce_eval(str(model_dir), data, cache_dir=cache, device="cpu", progress=lambda d, t: calls.append((d, t)))
    assert calls == [(5, 5)] and hit.to_json() == res.to_json()
    j = hit.to_json()
    assert set(j) >= {"model", "dataset", "tokens", "mean", "median", "p2.5-97.5", "p1-99", "p0.1-99.9"}
    assert j["tokens"] == 5 * 11 and len(j["p0.1-99.9"]) == 2
    with pytest.raises(AssertionError, match="was loaded"):  # other data or settings: a miss, hence a load
        ce_eval(str(model_dir), DataSpec("mem", tokens=toks[:4]), cache_dir=cache, device="cpu")
    with pytest.raises(AssertionError, match="was loaded"):
        ce_eval(str(model_dir), data, cache_dir=cache, device="cpu", precision="bf16")
    with pytest.raises(AssertionError, match="was loaded"):
        ce_eval(str(model_dir), data, cache_dir=cache, device="cpu", refresh=True)


def test_new_weights_are_a_new_key(model_dir):
    before = model_identity(str(model_dir))
    w = model_dir / "model.safetensors"
    st = w.stat()
    os.utime(w, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    after = model_identity(str(model_dir))
    assert before != after and key_hash({"m": before}) != key_hash({"m": after})
    assert model_identity("some/hub-id") == {"spec": "some/hub-id", "hub": True}


def test_disabled_cache_writes_nothing(model_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = ce_eval(str(model_dir), DataSpec("mem", tokens=tokens(n=2, seq_len=6)), cache_dir=None, device="cpu")
    assert res.entry.path is None and res.losses.shape == (2, 5)
    assert sorted(os.listdir(tmp_path)) == ["tiny"]
    with pytest.raises(EmptyDataError):
        ce_eval(str(model_dir), DataSpec("mem", tokens=np.zeros((0, 6), dtype=np.int64)), cache_dir=None)


def test_cache_put_get_round_trip(tmp_path):
    c = AnalysisCache(tmp_path)
    key = {"kind": "x", "a": [1, 2]}
    assert c.get("x", key) is None
    e = c.put("x", key, {"v": 1.5}, {"arr": np.arange(4)})
    assert e.meta["v"] == 1.5 and list(e.array("arr")) == [0, 1, 2, 3] and e.arrays() == ["arr"]
    assert c.get("x", key).meta["v"] == 1.5 and c.get("x", {"kind": "x", "a": [2, 1]}) is None
    c.put("x", key, {"v": 2.0})  # a second writer of the same key: the first entry stays
    assert c.get("x", key).meta["v"] == 1.5
    assert not [p for p in (tmp_path / "x").iterdir() if p.name.startswith(".tmp")]


def test_mechanistic_results_round_trip_through_the_cache(tmp_path, monkeypatch):
    lm_model = tiny_gpt2(seed=23)
    loaded = models.LoadedModel(model=lm_model, source="hub", spec="test:tiny", ln_free=False)
    toks = tokens(n=4, seq_len=10, seed=24)
    data = DataSpec("mem", tokens=toks)
    kw = dict(cache_dir=tmp_path, batch_size=3)
    ft = first_token_eval(loaded, data, **kw)
    ref = first_token_stats(lm_model, toks)
    np.testing.assert_allclose(ft.stats.first_norm, ref.first_norm, rtol=1e-6)
    np.testing.assert_allclose(ft.stats.first_attn, ref.first_attn, rtol=1e-6)
    assert ft.sink_rate(0.2, definition="head-mean", n_boot=50) == sink_rate(ref.first_attn, 0.2, n_boot=50, seq_len=10)
    np.testing.assert_array_equal(ft.stats.sink_counts, ref.sink_counts)
    dl = dla_eval(loaded, data, **kw)
    np.testing.assert_allclose(dl.attribution.de, head_attribution(lm_model, toks).de, rtol=1e-6)
    cf = confidence_eval(loaded, data, top_k=2, **kw)
    assert cf.top == confidence_scores(lm_model).top(2)
    assert len(cf.ablation.cumulative_ce) == 2 and cf.svd.cosines.shape == (2, 32)

    # read back by spec only: the key is the same, and nothing is recomputed
    with torch.no_grad():
        lm_model.lm_head.weight.zero_()  # would change every result if anything ran again
    again = models.LoadedModel(model=lm_model, source="hub", spec="test:tiny", ln_free=False)
    assert first_token_eval(again, data, **kw).to_json(0.2, 50) == ft.to_json(0.2, 50)
    assert dla_eval(again, data, **kw).to_json() == dl.to_json()
    assert confidence_eval(again, data, top_k=2, **kw).to_json() == cf.to_json()


def test_local_dataset_files_are_part_of_the_key(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"input_ids": [1, 2, 3, 4]}\n')
    a = DataSpec(str(path), seq_len=4).identity()
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    b = DataSpec(str(path), seq_len=4).identity()
    assert a["path"] == str(path.resolve()) and a != b
    assert DataSpec("pile", n=10).identity() == {"dataset": "pile", "split": None, "n": 10, "seq_len": 1024}
