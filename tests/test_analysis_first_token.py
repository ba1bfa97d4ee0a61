"""First-token norms against a plain loop over blocks and positions; attention to the first token
against HF's eager attention outputs; the sink rate against counting."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from lnfree_core.analysis.first_token import first_token_stats
from lnfree_core.analysis.sinks import sink_rate
from test_analysis_support import make_ln_free, tiny_gpt2, tokens


def _plain_residuals(model, x):
    """Residual stream points by running the blocks by hand: [L + 1] tensors [batch, pos, d_model]."""
    tr = model.transformer
    pos = torch.arange(x.shape[1])
    h = tr.wte(x) + tr.wpe(pos)[None]
    points = []
    for block in tr.h:
        points.append(h)
        h = block(h)  # SDPA with no mask is causal
        h = h[0] if isinstance(h, tuple) else h
    points.append(h)
    return points


@pytest.mark.parametrize("ln_free", [False, True])
def test_norms_against_a_plain_loop(ln_free):
    model = tiny_gpt2(seed=1, ln_scale=4.0)
    if ln_free:
        make_ln_free(model)
    toks = tokens(n=5, seq_len=12, seed=2)
    st = first_token_stats(model, toks, batch_size=2)
    assert st.points == ["resid_pre.0", "resid_pre.1", "resid_final"]
    assert model.config._attn_implementation == "sdpa"  # restored after the eager pass
    with torch.no_grad():
        x = torch.as_tensor(toks)
        pts = _plain_residuals(model, x)
        hf = model(x, output_hidden_states=True).hidden_states  # embeddings, block outputs, ln_f(last)
        for l in range(2):
            torch.testing.assert_close(pts[l], hf[l], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(model.transformer.ln_f(pts[2]), hf[2], rtol=1e-5, atol=1e-5)
        first = np.zeros((5, 3))
        rest = np.zeros((5, 3))
        for i in range(5):
            for l in range(3):
                v = pts[l][i].double()
                first[i, l] = float(torch.sqrt((v[0] ** 2).sum()))
                rest[i, l] = sum(float(torch.sqrt((v[t] ** 2).sum())) for t in range(1, 12)) / 11
    np.testing.assert_allclose(st.first_norm, first, rtol=1e-5)
    np.testing.assert_allclose(st.rest_norm, rest, rtol=1e-5)
    prof = st.profile()
    np.testing.assert_allclose(prof["first"], first.mean(0), rtol=1e-5)
    np.testing.assert_allclose(prof["ratio"], first.mean(0) / rest.mean(0), rtol=1e-5)


def test_attention_to_first_token_against_hf_eager_outputs():
    model = tiny_gpt2(seed=4)
    ref_model = copy.deepcopy(model)
    ref_model.set_attn_implementation("eager")
    toks = tokens(n=3, seq_len=10, seed=5)
    st = first_token_stats(model, toks, batch_size=2)
    with torch.no_grad():
        att = ref_model(torch.as_tensor(toks), output_attentions=True).attentions  # L x [b, H, q, k]
    ref = np.zeros((3, 2, 4))
    for i in range(3):
        for l in range(2):
            for h in range(4):
                ref[i, l, h] = sum(float(att[l][i, h, q, 0]) for q in range(1, 10)) / 9
    np.testing.assert_allclose(st.first_attn, ref, rtol=1e-5, atol=1e-7)
    assert not np.allclose(ref, ref.mean())  # a non-trivial pattern was tested


def test_without_attention_capture():
    model = tiny_gpt2()
    st = first_token_stats(model, tokens(n=2, seq_len=6), attention=False)
    assert st.first_attn is None and st.first_norm.shape == (2, 3)


def test_sink_rate_against_counting():
    rng = np.random.default_rng(0)
    a = rng.uniform(0, 0.6, size=(40, 3, 4))
    a[:, 0, 0] = 0.3  # exactly at the threshold counts as a sink
    sr = sink_rate(a, 0.3, n_boot=200)
    per_seq = [sum(a[i, l, h] >= 0.3 for l in range(3) for h in range(4)) / 12 for i in range(40)]
    assert sr.rate == pytest.approx(np.mean(per_seq))
    assert sr.ci[0] <= sr.rate <= sr.ci[1] and sr.ci[0] < sr.ci[1]
    assert sr.per_layer[0] == pytest.approx(np.mean([(a[:, 0, h] >= 0.3).mean() for h in range(4)]))
    assert sr.per_head[0][0] == 1.0
    assert sink_rate(a, 0.7, n_boot=10).rate == 0.0
    with pytest.raises(ValueError):
        sink_rate(a[0])
