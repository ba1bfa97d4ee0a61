"""Per-token CE against F.cross_entropy on the HF logits, and its summary against numpy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lnfree_core.analysis.ce import ce_and_entropy_from_logits, per_token_ce
from lnfree_core.analysis.ce_summary import summarize_ce
from test_analysis_support import VOCAB, make_ln_free, tiny_gpt2, tokens


@pytest.mark.parametrize("ln_free", [False, True])
def test_per_token_ce_matches_cross_entropy_on_hf_logits(ln_free):
    model = tiny_gpt2()
    if ln_free:
        make_ln_free(model)
    toks = tokens(n=5, seq_len=12)
    calls = []
    got = per_token_ce(model, toks, batch_size=2, progress=lambda d, t: calls.append((d, t)))
    assert got.shape == (5, 11) and got.dtype == torch.float32
    ref = torch.empty(5, 11)
    with torch.no_grad():
        for i in range(5):  # one sequence at a time, one position at a time
            x = torch.as_tensor(toks[i : i + 1])
            logits = model(x).logits[0]  # [pos, vocab]
            for t in range(11):
                ref[i, t] = F.cross_entropy(logits[t : t + 1], x[0, t + 1 : t + 2])
            # the HF loss (mean over the sequence's predictions) agrees as well
            assert model(x, labels=x).loss.item() == pytest.approx(ref[i].mean().item(), rel=1e-5)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
    assert calls == [(2, 5), (4, 5), (5, 5)]


def test_token_after_eot_is_scored_like_any_other():
    model = tiny_gpt2()
    eot = model.config.eos_token_id
    toks = tokens(n=2, seq_len=10)
    toks[:, 4] = eot  # the loss at column 4 predicts the token after the EOT
    got = per_token_ce(model, toks).numpy()
    assert np.isfinite(got).all() and (got[:, 4] > 0).all()
    with torch.no_grad():
        logits = model(torch.as_tensor(toks)).logits
    ref = F.cross_entropy(logits[:, 4], torch.as_tensor(toks[:, 5]), reduction="none")
    np.testing.assert_allclose(got[:, 4], ref.numpy(), rtol=1e-5)


def test_batch_size_does_not_change_losses():
    model = tiny_gpt2(seed=3)
    toks = tokens(n=7, seq_len=9, seed=1)
    a = per_token_ce(model, toks, batch_size=7)
    b = per_token_ce(model, toks, batch_size=3)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_ce_and_entropy_from_logits_against_a_direct_formula():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, VOCAB, generator=g) * 3
    x = torch.randint(0, VOCAB, (2, 5), generator=g)
    ce, ent = ce_and_entropy_from_logits(logits, x)
    p = torch.softmax(logits[:, :-1].double(), -1)
    ref_ent = -(p * p.log()).sum(-1)
    ref_ce = -p.log().gather(-1, x[:, 1:, None]).squeeze(-1)
    torch.testing.assert_close(ce.double(), ref_ce, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ent.double(), ref_ent, rtol=1e-5, atol=1e-6)


def test_summary_against_numpy_and_a_sorted_array():
    rng = np.random.default_rng(0)
    losses = rng.gamma(2.0, 1.5, size=(40, 63)).astype(np.float32)
    losses[3, 7] = 5e6  # an E.1-style outlier moves the mean, not the central ranges much
    s = summarize_ce(losses)
    v = np.sort(losses.ravel().astype(np.float64))
    n = v.size

    def pct(q):  # linear interpolation at fractional rank q/100 * (n - 1), written out
        r = q / 100 * (n - 1)
        lo = int(np.floor(r))
        return v[lo] + (r - lo) * (v[min(lo + 1, n - 1)] - v[lo])

    assert s.tokens == 40 * 63
    assert s.mean == pytest.approx(v.sum() / n, rel=1e-12)
    assert s.median == pytest.approx(pct(50), rel=1e-12)
    # the paper's "95th" and "99.9th perc" ranges are the 2.5-97.5 and 0.1-99.9 percentiles; 1-99 too
    assert set(s.ranges) == {"p2.5-97.5", "p1-99", "p0.1-99.9"}
    for name, (lo, hi) in {"p2.5-97.5": (2.5, 97.5), "p1-99": (1, 99), "p0.1-99.9": (0.1, 99.9)}.items():
        got = s.ranges[name]
        assert got[0] == pytest.approx(pct(lo), rel=1e-12) and got[1] == pytest.approx(pct(hi), rel=1e-12)
        assert list(got) == list(np.percentile(losses.astype(np.float64), [lo, hi]))
    assert s.ranges["p2.5-97.5"][1] < 20 and s.mean > 1000
    assert type(s).from_dict(s.to_dict()) == s


def test_chunked_ce_equals_the_definition_for_any_chunk_size():
    """CE[i, t] = logsumexp(h[i, t] @ W_U) - (h[i, t] @ W_U)[x[i, t+1]], computed here in float64."""
    from lnfree_core.analysis.ce import chunked_token_ce

    torch.manual_seed(0)
    model = tiny_gpt2()
    h = 3 * torch.randn(3, 7, model.config.n_embd)  # [batch, pos, d_model]
    x = torch.randint(0, model.config.vocab_size, (3, 7))
    logits = h.double() @ model.lm_head.weight.double().T  # [batch, pos, vocab]
    want = torch.logsumexp(logits[:, :-1], -1) - logits[:, :-1].gather(-1, x[:, 1:, None]).squeeze(-1)
    for chunk in (1, 5 * model.config.vocab_size, 10**9):  # one position at a time, 5 positions, all at once
        got = chunked_token_ce(model, h, x, chunk_elements=chunk)
        assert got.dtype == torch.float32 and got.shape == (3, 6)
        torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5)
