"""Confidence neurons: eq. 11-12 against a per-neuron numpy loop, the SVD against numpy's, and mean
ablation against a full forward pass with the neuron's activation replaced."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lnfree_core.analysis.confidence import confidence_scores, unembed_svd
from lnfree_core.analysis.neuron_ablation import ablate_neurons, mean_activations
from test_analysis_support import make_ln_free, tiny_gpt2, tokens


def _weights(model, fold_ln, center):
    w_out = model.transformer.h[-1].mlp.c_proj.weight.detach().double().numpy()  # [d_mlp, d_model]
    w_u = model.lm_head.weight.detach().double().numpy().T  # [d_model, vocab]
    if fold_ln:
        w_u = model.transformer.ln_f.weight.detach().double().numpy()[:, None] * w_u
    if center:
        w_out = w_out - w_out.mean(axis=1, keepdims=True)
        w_u = w_u - w_u.mean(axis=1, keepdims=True)
    return w_out, w_u


@pytest.mark.parametrize("fold_ln,center", [(True, True), (False, False)])
def test_scores_against_a_loop(fold_ln, center):
    model = tiny_gpt2(seed=2)
    sc = confidence_scores(model, fold_ln=fold_ln, center=center)
    w_out, w_u = _weights(model, fold_ln, center)
    d_mlp, vocab = w_out.shape[0], w_u.shape[1]
    for i in range(0, d_mlp, 7):
        w = w_out[i]
        cos = np.array([w @ w_u[:, t] / (np.linalg.norm(w_u[:, t]) * np.linalg.norm(w)) for t in range(vocab)])
        lv = ((cos - cos.mean()) ** 2).mean()  # population variance over the vocabulary
        assert sc.norm[i] == pytest.approx(np.linalg.norm(w), rel=1e-10)
        assert sc.logit_var[i] == pytest.approx(lv, rel=1e-8)
        assert sc.score[i] == pytest.approx(np.linalg.norm(w) / lv, rel=1e-8)
    top = sc.top(5)
    assert top == list(np.argsort(-sc.score)[:5])


def test_processing_changes_scores():
    model = tiny_gpt2(seed=2)
    a, b = confidence_scores(model), confidence_scores(model, fold_ln=False, center=False)
    assert not np.allclose(a.score, b.score)


def test_svd_against_numpy():
    model = tiny_gpt2(seed=3)
    neurons = [0, 5, 17]
    res = unembed_svd(model, neurons)
    w_out, w_u = _weights(model, True, True)
    u, s, _ = np.linalg.svd(w_u, full_matrices=False)
    np.testing.assert_allclose(res.singular_values, s / s[0], rtol=1e-8, atol=1e-12)
    for k, i in enumerate(neurons):
        ref = np.abs(u.T @ w_out[i]) / np.linalg.norm(w_out[i])
        np.testing.assert_allclose(res.cosines[k], ref, rtol=1e-6, atol=1e-9)
        assert res.cosines[k] @ res.cosines[k] == pytest.approx(1.0)  # U is an orthonormal basis


def _ablated_logits(model, toks, neurons, means):
    """(tokens [n, T], logits [n, T-1, vocab] float64) of a full forward pass with neurons' activations replaced
    by `means` (a pre-hook on the last MLP's output projection)."""
    proj = model.transformer.h[-1].mlp.c_proj

    def pre(module, args):
        a = args[0].clone()
        for i in neurons:
            a[..., i] = means[i]
        return (a,)

    h = proj.register_forward_pre_hook(pre)
    try:
        with torch.no_grad():
            x = torch.as_tensor(toks)
            logits = model(x).logits[:, :-1].double()
    finally:
        h.remove()
    return x, logits


def _full_forward_ablation(model, toks, neurons, means):
    """Mean CE and entropy with neurons' activations replaced by `means` in a full forward pass."""
    x, logits = _ablated_logits(model, toks, neurons, means)
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1))
    p = torch.softmax(logits, -1)
    return float(ce), float(-(p * p.log()).sum(-1).mean())


def _token_ce(model, toks, neurons, means):
    """Per-token CE [n, T-1] (float64) with neurons' activations replaced by `means`, full forward pass."""
    x, logits = _ablated_logits(model, toks, neurons, means)
    logp = torch.log_softmax(logits, -1)
    return -logp.gather(-1, x[:, 1:, None]).squeeze(-1).numpy()


def test_same_neurons_in_every_variant_by_choice(tmp_path):
    """confidence_eval(neurons=...) ablates the given neurons (the first model's top-k), not the model's own."""
    from lnfree_core import models
    from lnfree_core.analysis.cached import DataSpec, confidence_eval

    a, b = tiny_gpt2(seed=5), tiny_gpt2(seed=9)
    toks = tokens(n=3, seq_len=8, seed=1)
    data = DataSpec("mem", tokens=toks)
    la = models.LoadedModel(model=a, source="hub", spec="test:a", ln_free=False)
    lb = models.LoadedModel(model=b, source="hub", spec="test:b", ln_free=False)
    first = confidence_eval(la, data, top_k=3, cache_dir=tmp_path)
    own = confidence_eval(lb, data, top_k=3, cache_dir=tmp_path)
    same = confidence_eval(lb, data, top_k=3, neurons=first.top, cache_dir=tmp_path)
    assert own.top != first.top  # different random models: different own top-k
    assert same.ablated == first.top and same.top == own.top and own.ablated == own.top
    ref = ablate_neurons(b, toks, first.top)
    assert same.ablation.cumulative_ce == pytest.approx(ref.cumulative_ce, rel=1e-6)
    with pytest.raises(ValueError, match="not in the last MLP layer"):
        confidence_eval(lb, data, neurons=[10_000], cache_dir=None)


@pytest.mark.parametrize("ln_free", [False, True])
def test_ablation_against_full_forward_passes(ln_free):
    model = tiny_gpt2(seed=5)
    if ln_free:
        make_ln_free(model)
    toks = tokens(n=4, seq_len=10, seed=6)
    acts = []
    proj = model.transformer.h[-1].mlp.c_proj
    h = proj.register_forward_pre_hook(lambda m, a: acts.append(a[0].detach().double()))
    with torch.no_grad():
        model(torch.as_tensor(toks))
    h.remove()
    ref_means = acts[0].mean(dim=(0, 1))  # over every position of every sequence
    means = mean_activations(model, toks, batch_size=3)
    torch.testing.assert_close(means.double(), ref_means, rtol=1e-5, atol=1e-6)

    neurons = [3, 11, 40]
    calls = []
    res = ablate_neurons(model, toks, neurons, batch_size=3, progress=lambda d, t: calls.append((d, t)))
    assert calls[-1] == (8, 8) and calls[0] == (3, 8)  # two passes of 4 sequences
    base = _full_forward_ablation(model, toks, [], ref_means)
    assert (res.baseline_ce, res.baseline_entropy) == pytest.approx(base, rel=1e-5)
    for k, i in enumerate(neurons):
        assert (res.single_ce[k], res.single_entropy[k]) == pytest.approx(
            _full_forward_ablation(model, toks, [i], ref_means), rel=1e-5)
        assert (res.cumulative_ce[k], res.cumulative_entropy[k]) == pytest.approx(
            _full_forward_ablation(model, toks, neurons[: k + 1], ref_means), rel=1e-5)
    assert abs(res.cumulative_ce[-1] - res.baseline_ce) > 1e-4  # the ablation did something
    d = res.to_dict()
    assert d["single"][1]["delta_ce"] == pytest.approx(res.single_ce[1] - res.baseline_ce)
    assert type(res).from_dict(d) == res
    # Fig. 8: per-token CE change with all three ablated, against full forward passes (atol 1e-5 nats)
    base_tok, abl_tok = _token_ce(model, toks, [], ref_means), _token_ce(model, toks, neurons, ref_means)
    np.testing.assert_allclose(res.token_delta_ce, abl_tok - base_tok, rtol=1e-4, atol=1e-5)
    box = d["abs_delta_ce"]
    v = np.abs(abl_tok - base_tok).ravel()
    assert box["tokens"] == v.size and box["median"] == pytest.approx(np.median(v), rel=1e-4, abs=1e-6)
    assert box["mean"] == pytest.approx(v.mean(), rel=1e-4, abs=1e-6)
    # the mean of |dCE| is not the |dCE of the mean| (signs cancel in the latter)
    assert box["mean"] >= abs(res.cumulative_ce[-1] - res.baseline_ce) - 1e-6


def test_ablating_a_neuron_with_zero_output_weights_changes_nothing():
    model = tiny_gpt2(seed=7)
    with torch.no_grad():
        model.transformer.h[-1].mlp.c_proj.weight[9].zero_()
    toks = tokens(n=3, seq_len=8, seed=8)
    res = ablate_neurons(model, toks, [9, 2])
    assert res.single_ce[0] == pytest.approx(res.baseline_ce, abs=1e-9)
    assert res.single_entropy[0] == pytest.approx(res.baseline_entropy, abs=1e-9)
    assert res.neuron_means[0] != 0.0  # the activation did change; its write is zero
    assert res.cumulative_ce[1] == pytest.approx(res.single_ce[1], abs=1e-9)  # {9, 2} acts like {2}
    assert abs(res.single_ce[1] - res.baseline_ce) > 1e-5
