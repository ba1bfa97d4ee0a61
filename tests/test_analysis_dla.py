"""DLA vs direct effect per head against an independent decomposition of the residual stream, and
NMAE (eq. 9, 10): 0 to float precision once the final LN is removed, > 0 with it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lnfree_core.analysis.dla import HeadAttribution, head_attribution
from lnfree_core.analysis.nmae import nmae
from test_analysis_support import make_ln_free, tiny_gpt2, tokens


@torch.no_grad()
def _reference(model, toks, center_unembed=False):
    """Per-token DLA and DE [n, T-1, L, H] (float64), with head outputs isolated through c_proj itself."""
    tr = model.transformer
    L, H = len(tr.h), model.config.n_head
    cap = {}
    handles = [tr.ln_f.register_forward_pre_hook(lambda m, a: cap.__setitem__("r", a[0].detach()))]
    for l, b in enumerate(tr.h):
        handles.append(b.attn.c_proj.register_forward_pre_hook(lambda m, a, l=l: cap.__setitem__(("z", l), a[0].detach())))
        handles.append(b.attn.register_forward_hook(lambda m, a, o, l=l: cap.__setitem__(("attn", l), o[0].detach())))
        handles.append(b.mlp.register_forward_hook(lambda m, a, o, l=l: cap.__setitem__(("mlp", l), o.detach())))
    x = torch.as_tensor(toks)
    with torch.no_grad():
        logits = model(x).logits
    for h in handles:
        h.remove()
    r = cap["r"].double()
    # the residual stream is the sum of its writes: embeddings + attention + MLP outputs
    emb = tr.wte(x) + tr.wpe(torch.arange(x.shape[1]))[None]
    total = emb.double() + sum(cap[("attn", l)].double() + cap[("mlp", l)].double() for l in range(L))
    torch.testing.assert_close(total, r, rtol=1e-5, atol=1e-5)
    norm = tr.ln_f
    w, b = norm.weight.double(), norm.bias.double()
    if isinstance(norm, torch.nn.LayerNorm):
        ln = lambda v: F.layer_norm(v, (v.shape[-1],), w, b, norm.eps)  # noqa: E731
        scale = lambda v: torch.sqrt(v.var(-1, keepdim=True, correction=0) + norm.eps)  # noqa: E731
    else:  # FakeLN removed: sigma_bar
        sig = float(norm.sigma)
        ln = lambda v: (v - v.mean(-1, keepdim=True)) / sig * w + b  # noqa: E731
        scale = lambda v: torch.full_like(v[..., :1], sig)  # noqa: E731
    torch.testing.assert_close((ln(r) @ model.lm_head.weight.double().T).float(), logits, rtol=1e-4, atol=1e-4)
    w_u = model.lm_head.weight.double()  # [vocab, d]
    if center_unembed:  # TransformerLens' center_unembed: subtract the mean over the vocabulary
        w_u = w_u - w_u.mean(dim=0, keepdim=True)
    u_y = w_u[x[:, 1:]]  # [n, T-1, d]
    n, T = toks.shape
    dla = np.zeros((n, T - 1, L, H))
    de = np.zeros_like(dla)
    for l in range(L):
        z = cap[("z", l)].double()
        dh = z.shape[-1] // H
        proj = tr.h[l].attn.c_proj
        for h in range(H):
            zh = torch.zeros_like(z)
            zh[..., h * dh:(h + 1) * dh] = z[..., h * dh:(h + 1) * dh]
            c = (proj(zh.float()) - proj.bias).double()  # c_proj applied to head h alone, minus its bias
            c = c[:, :-1]
            rr = r[:, :-1]
            de[:, :, l, h] = ((ln(rr) - ln(rr - c)) * u_y).sum(-1).numpy()
            dla[:, :, l, h] = (((c - c.mean(-1, keepdim=True)) / scale(rr) * w) * u_y).sum(-1).numpy()
    return dla, de


@pytest.mark.parametrize("variant", ["ln", "final_removed", "all_removed"])
def test_dla_and_de_against_reference(variant):
    model = tiny_gpt2(seed=11)
    if variant == "final_removed":
        make_ln_free(model, sigma=3.0, only=("f",))
    elif variant == "all_removed":
        make_ln_free(model, sigma=3.0)
    toks = tokens(n=4, seq_len=9, seed=12)
    at = head_attribution(model, toks, batch_size=3)
    dla, de = _reference(model, toks)
    np.testing.assert_allclose(at.dla, dla.mean(1), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(at.de, de.mean(1), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(at.abs_err, np.abs(dla - de).sum(1), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(at.abs_de, np.abs(de).sum(1), rtol=1e-4, atol=1e-5)
    assert at.positions == 8
    np.testing.assert_allclose(at.dla_last, dla[:, -1], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(at.de_last, de[:, -1], rtol=1e-4, atol=1e-5)
    cen = head_attribution(model, toks, batch_size=3, center_unembed=True)
    dla_c, de_c = _reference(model, toks, center_unembed=True)
    np.testing.assert_allclose(cen.dla, dla_c.mean(1), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(cen.de, de_c.mean(1), rtol=1e-4, atol=1e-5)
    assert not np.allclose(cen.de, at.de, rtol=1e-3)
    res = nmae(at, n_boot=100)
    if variant == "ln":
        assert res.overall > 1.0 and res.ci[0] > 0.0
        assert nmae(at, "token", n_boot=10).overall > 1.0
    else:  # final LN removed: DLA is the direct effect, to float precision
        assert res.overall < 1e-6 and res.ci[1] < 1e-6
        assert nmae(at, "token", n_boot=10).overall < 1e-6
        assert np.abs(at.de).max() > 1e-2  # the effects themselves are not negligible


def test_nmae_against_the_formulas():
    rng = np.random.default_rng(0)
    n, L, H, T = 30, 2, 3, 5
    dla = rng.normal(size=(n, L, H))
    de = dla + rng.normal(scale=0.3, size=(n, L, H))
    abs_err = rng.uniform(0.1, 1.0, size=(n, L, H))
    abs_de = rng.uniform(1.0, 2.0, size=(n, L, H))
    at = HeadAttribution(dla=dla, de=de, abs_err=abs_err, abs_de=abs_de, positions=T)
    res = nmae(at, n_boot=200)
    per_head = np.zeros((L, H))
    for l in range(L):
        for h in range(H):  # eq. 9
            per_head[l, h] = 100 * np.mean(np.abs(dla[:, l, h] - de[:, l, h])) / np.mean(np.abs(de[:, l, h]))
    np.testing.assert_allclose(res.per_head, per_head, rtol=1e-12)
    assert res.overall == pytest.approx(per_head.mean())  # eq. 10
    assert res.ci[0] < res.overall < res.ci[1]
    tok = nmae(at, "token", n_boot=10)
    assert tok.overall == pytest.approx((100 * abs_err.sum(0) / abs_de.sum(0)).mean())
    with pytest.raises(ValueError):
        nmae(at, "position")


def test_nmae_options_last_position_and_pooled():
    """positions='last': eq. 9/10 on the last-position values; pooling='pooled': one ratio over all
    (sequence, head) pairs. Both written out with numpy (rtol 1e-12)."""
    rng = np.random.default_rng(1)
    n, L, H = 20, 2, 3
    dla, de = rng.normal(size=(n, L, H)), rng.normal(size=(n, L, H))
    dla_last, de_last = rng.normal(size=(n, L, H)), rng.normal(scale=3.0, size=(n, L, H))
    at = HeadAttribution(dla=dla, de=de, abs_err=np.abs(dla - de), abs_de=np.abs(de), positions=7,
                         dla_last=dla_last, de_last=de_last)
    last = nmae(at, positions="last", n_boot=50)
    per_head = 100 * np.abs(dla_last - de_last).mean(0) / np.abs(de_last).mean(0)
    assert last.overall == pytest.approx(per_head.mean(), rel=1e-12) and last.positions == "last"
    pooled = nmae(at, pooling="pooled", n_boot=50)
    assert pooled.overall == pytest.approx(100 * np.abs(dla - de).sum() / np.abs(de).sum(), rel=1e-12)
    assert pooled.overall != pytest.approx(nmae(at, n_boot=10).overall)
    with pytest.raises(ValueError):
        nmae(at, pooling="median")
