"""First-token norms against a plain loop over blocks and positions; attention to the first token
against HF's eager attention outputs; the sink rate against counting."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from lnfree_core.analysis.first_token import SINK_THRESHOLDS, first_token_stats
from lnfree_core.analysis.sinks import sink_rate, sink_rate_from_counts, uniform_rate
from test_analysis_support import make_ln_free, tiny_gpt2, tokens


def _plain_residuals(model, x):
    """resid_pre/mid/post of every block by running the blocks by hand: {name: [batch, pos, d_model]}."""
    tr = model.transformer
    pos = torch.arange(x.shape[1])
    h = tr.wte(x) + tr.wpe(pos)[None]
    points = {}
    for l, block in enumerate(tr.h):
        points[f"resid_pre.{l}"] = h
        a = block.attn(block.ln_1(h))
        mid = h + (a[0] if isinstance(a, tuple) else a)
        points[f"resid_mid.{l}"] = mid
        h = block(h)  # SDPA with no mask is causal
        h = h[0] if isinstance(h, tuple) else h
        points[f"resid_post.{l}"] = h
    return points


@pytest.mark.parametrize("ln_free", [False, True])
def test_norms_against_a_plain_loop(ln_free):
    """Centred (||x - mean x||, the default) and raw norms at resid_pre/mid/post against blocks run by
    hand (rtol 1e-5, float32)."""
    model = tiny_gpt2(seed=1, ln_scale=4.0)
    if ln_free:
        make_ln_free(model)
    toks = tokens(n=5, seq_len=12, seed=2)
    st = first_token_stats(model, toks, batch_size=2)
    names = [f"{k}.{l}" for l in range(2) for k in ("resid_pre", "resid_mid", "resid_post")]
    assert st.points == names
    assert model.config._attn_implementation == "sdpa"  # restored after the eager pass
    with torch.no_grad():
        x = torch.as_tensor(toks)
        pts = _plain_residuals(model, x)
        hf = model(x, output_hidden_states=True).hidden_states  # embeddings, block outputs, ln_f(last)
        torch.testing.assert_close(pts["resid_post.0"], hf[1], rtol=1e-5, atol=1e-5)
        ref = {k: np.zeros((5, 6)) for k in ("fc", "rc", "fr", "rr")}
        for i in range(5):
            for p, name in enumerate(names):
                v = pts[name][i].double()
                c = v - v.mean(dim=-1, keepdim=True)
                ref["fc"][i, p] = float(torch.sqrt((c[0] ** 2).sum()))
                ref["rc"][i, p] = sum(float(torch.sqrt((c[t] ** 2).sum())) for t in range(1, 12)) / 11
                ref["fr"][i, p] = float(torch.sqrt((v[0] ** 2).sum()))
                ref["rr"][i, p] = sum(float(torch.sqrt((v[t] ** 2).sum())) for t in range(1, 12)) / 11
    np.testing.assert_allclose(st.first_norm, ref["fc"], rtol=1e-5)
    np.testing.assert_allclose(st.rest_norm, ref["rc"], rtol=1e-5)
    np.testing.assert_allclose(st.first_norm_raw, ref["fr"], rtol=1e-5)
    np.testing.assert_allclose(st.rest_norm_raw, ref["rr"], rtol=1e-5)
    assert not np.allclose(ref["fc"], ref["fr"], rtol=1e-3)  # centring matters on this model
    prof = st.profile()
    assert prof["norm"] == "centred"
    np.testing.assert_allclose(prof["first"], ref["fc"].mean(0), rtol=1e-5)
    np.testing.assert_allclose(prof["ratio"], ref["fc"].mean(0) / ref["rc"].mean(0), rtol=1e-5)
    raw = st.profile("raw", points=("resid_mid",))
    assert raw["points"] == ["resid_mid.0", "resid_mid.1"]
    np.testing.assert_allclose(raw["first"], ref["fr"][:, [1, 4]].mean(0), rtol=1e-5)


def _stats_and_eager_attentions(toks, batch_size, **model_kw):
    """first_token_stats of a tiny GPT-2 (SDPA), and the attention patterns L x [n, H, q, k] that HF's eager
    attention returns for a copy of the same model."""
    model = tiny_gpt2(**model_kw)
    ref_model = copy.deepcopy(model)
    ref_model.set_attn_implementation("eager")
    st = first_token_stats(model, toks, batch_size=batch_size)
    with torch.no_grad():
        att = ref_model(torch.as_tensor(toks), output_attentions=True).attentions
    return st, att


def test_attention_to_first_token_against_hf_eager_outputs():
    st, att = _stats_and_eager_attentions(tokens(n=3, seq_len=10, seed=5), 2, seed=4)  # att: L x [b, H, q, k]
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
    assert st.first_attn is None and st.sink_counts is None and st.first_norm.shape == (2, 6)


def test_sink_rate_per_layer_head_query_against_hf_attentions():
    """The paper's sink rate: share of (layer, head, query) triples with A[q, 0] > 0.3, query 0 counted,
    per sequence, averaged; CI = 2.5/97.5 percentiles of the rates of batches of 8 sequences. Checked
    against HF's eager attentions and numpy (rtol 1e-12 on the counts' ratios)."""
    from lnfree_core.analysis.first_token import SINK_THRESHOLDS
    from lnfree_core.analysis.sinks import sink_rate_from_counts

    st, att = _stats_and_eager_attentions(tokens(n=19, seq_len=10, seed=6), 4, seed=4, ln_scale=3.0)
    a0 = np.stack([a[:, :, :, 0].double().numpy() for a in att], axis=1)  # [n, L, H, q]
    for tau in (0.3, 0.15):
        per_seq = (a0 > tau).reshape(19, -1).mean(axis=1)  # every (l, h, q), query 0 included
        batch_rates = [per_seq[i:i + 8].mean() for i in range(0, 19, 8)]  # 8, 8, 3 sequences
        sr = sink_rate_from_counts(st.sink_counts, st.n_queries, SINK_THRESHOLDS, tau)
        assert sr.rate == pytest.approx(np.mean(batch_rates), rel=1e-12)
        assert sr.ci == pytest.approx(tuple(np.percentile(batch_rates, [2.5, 97.5])), rel=1e-12)
        assert sr.per_layer == pytest.approx(list((a0 > tau).mean(axis=(0, 2, 3))), rel=1e-12)
        boot = sink_rate_from_counts(st.sink_counts, st.n_queries, SINK_THRESHOLDS, tau, ci_method="bootstrap",
                                     n_boot=200)
        assert boot.rate == pytest.approx(per_seq.mean(), rel=1e-12) and "bootstrap" in boot.ci_label
    assert (a0[..., 0] == 1).all()  # query 0 attends only to itself: always a sink triple
    # the head-mean convention gives a different number on the same attention
    hm = sink_rate(st.first_attn, 0.3, n_boot=50)
    q = sink_rate_from_counts(st.sink_counts, st.n_queries, SINK_THRESHOLDS, 0.3)
    assert hm.rate != pytest.approx(q.rate)
    with pytest.raises(ValueError, match="was not counted"):
        sink_rate_from_counts(st.sink_counts, st.n_queries, SINK_THRESHOLDS, 0.33)


def test_head_mean_sink_rate_against_counting():
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


@pytest.mark.parametrize("seq_len", [1, 3, 4, 12, 128, 512])
def test_uniform_rate_against_hand_counts(seq_len):
    """The floor of a rate: A[q, 0] = 1/(q+1) for heads that attend uniformly. At tau = 0.3 the query
    definition counts q = 0, 1, 2 (1, 1/2, 1/3 > 0.3): 3/T, capped at T/T; the head-mean one needs the
    mean of 1/(q+1) over q >= 1 to reach 0.3 (T = 3: (1/2 + 1/3)/2 = 0.417 counts; T = 4: 0.361 counts;
    T = 12: 0.191 does not)."""
    assert uniform_rate(seq_len, 0.3, "query") == pytest.approx(min(3, seq_len) / seq_len, abs=0)
    expected_hm = {1: 0.0, 3: 1.0, 4: 1.0, 12: 0.0, 128: 0.0, 512: 0.0}[seq_len]
    assert uniform_rate(seq_len, 0.3, "head-mean") == expected_hm
    assert uniform_rate(512, 0.3) == pytest.approx(0.00586, abs=1e-5)  # the paper's length: 0.6%
    with pytest.raises(ValueError, match="seq_len"):
        uniform_rate(0)
    with pytest.raises(ValueError, match="definition"):
        uniform_rate(8, 0.3, "heads")


def test_a_model_with_uniform_attention_scores_the_uniform_rate():
    """Zero query and key weights and biases make every score 0, so causal softmax is uniform
    (A[q, 0] = 1/(q+1) exactly). The measured rates must then equal uniform_rate (both definitions,
    every counted threshold), and SinkRate.uniform carries it."""
    model = tiny_gpt2(seed=3)
    d = model.config.n_embd
    with torch.no_grad():
        for block in model.transformer.h:
            block.attn.c_attn.weight[:, :2 * d] = 0  # HF Conv1D: [d_in, 3 d] = [q | k | v]
            block.attn.c_attn.bias[:2 * d] = 0
    toks = tokens(n=8, seq_len=12, seed=4)
    st = first_token_stats(model, toks, batch_size=4)
    for tau in (0.3, 0.5):
        if round(tau, 6) not in [round(t, 6) for t in SINK_THRESHOLDS]:
            continue
        r = sink_rate_from_counts(st.sink_counts, st.n_queries, SINK_THRESHOLDS, tau)
        assert r.rate == pytest.approx(uniform_rate(12, tau, "query"), abs=1e-12)
        assert r.uniform == pytest.approx(r.rate, abs=1e-12)
    np.testing.assert_allclose(st.first_attn, np.mean(1.0 / np.arange(2, 13)), rtol=1e-5)
    hm = sink_rate(st.first_attn, 0.15, n_boot=10, seq_len=12)  # mean 0.191 >= 0.15: every head counts
    assert hm.rate == 1.0 and hm.uniform == 1.0
    assert sink_rate(st.first_attn, 0.3, n_boot=10).uniform is None  # T not given
