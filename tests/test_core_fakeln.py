"""FakeLN (eq. 2): equality with LayerNorm while live, affine once removed, exact gradients, tracking."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lnfree_core.method.fakeln import FakeLayerNorm, _RemovedLNFunction, ln_divisor, per_token_std
from lnfree_core.method.surgery import fakeln_modules, make_removable
from lnfree_core.method.tracking import SigmaTracker

from _tiny import tiny_model

torch.set_default_dtype(torch.float32)


def _pair(d=16, eps=1e-5, seed=0):
    torch.manual_seed(seed)
    ln = nn.LayerNorm(d, eps=eps)
    with torch.no_grad():
        ln.weight.normal_()
        ln.bias.normal_()
    fake = FakeLayerNorm(nn.Parameter(ln.weight.detach().clone()), nn.Parameter(ln.bias.detach().clone()), eps, "mlp.0")
    return ln, fake


def test_live_fakeln_equals_layernorm_forward_and_backward():
    ln, fake = _pair()
    x = torch.randn(3, 5, 16) * 4 + 1
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    y1, y2 = ln(x1), fake(x2)
    torch.testing.assert_close(y2, y1, atol=1e-6, rtol=1e-5)
    g = torch.randn_like(y1)
    (y1 * g).sum().backward()
    (y2 * g).sum().backward()
    torch.testing.assert_close(x2.grad, x1.grad, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(fake.weight.grad, ln.weight.grad, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(fake.bias.grad, ln.bias.grad, atol=1e-5, rtol=1e-4)


def test_removed_function_backward_gradcheck_float64():
    torch.manual_seed(1)
    x = torch.randn(2, 3, 8, dtype=torch.float64, requires_grad=True)
    w = torch.randn(8, dtype=torch.float64, requires_grad=True)
    b = torch.randn(8, dtype=torch.float64, requires_grad=True)
    sigma = torch.tensor(1.7, dtype=torch.float64)
    f = lambda x, w, b: _RemovedLNFunction.apply(x, w, b, sigma)  # noqa: E731
    ref = (x - x.mean(-1, keepdim=True)) / 1.7 * w + b
    torch.testing.assert_close(f(x, w, b), ref)
    assert torch.autograd.gradcheck(f, (x, w, b))


def test_removed_block_is_affine_and_uses_frozen_sigma():
    _, fake = _pair()
    fake.train()
    x = torch.randn(4, 7, 16) * 3
    fake(x)
    fake.commit_micro_batch()
    s, n = fake.step_statistics()
    fake.update_sigma_avg(s, n, None)
    expected = per_token_std(x, 1e-5).mean()
    assert float(fake.sigma_avg) == pytest.approx(float(expected), rel=1e-6)
    sigma = fake.remove()
    assert sigma == pytest.approx(float(expected), rel=1e-6)
    a, b = torch.randn(2, 3, 16), torch.randn(2, 3, 16)
    alpha = 0.3
    lhs = fake(alpha * a + (1 - alpha) * b)
    rhs = alpha * fake(a) + (1 - alpha) * fake(b)
    torch.testing.assert_close(lhs, rhs, atol=1e-5, rtol=1e-5)
    # Explicit eq. 2
    ref = (a - a.mean(-1, keepdim=True)) / sigma * fake.weight + fake.bias
    torch.testing.assert_close(fake(a), ref, atol=1e-6, rtol=1e-5)


def test_fakeln_equals_layernorm_on_the_batch_that_set_sigma_when_stds_are_equal():
    ln, fake = _pair()
    fake.train()
    x = torch.randn(2, 6, 16)
    x = x - x.mean(-1, keepdim=True)
    x = x / x.std(-1, keepdim=True, correction=0) * 2.5  # every token has the same std
    fake(x)
    fake.commit_micro_batch()
    fake.update_sigma_avg(*fake.step_statistics(), None)
    fake.remove()
    fake.eval()
    torch.testing.assert_close(fake(x), ln(x), atol=1e-5, rtol=1e-5)


def test_no_tracking_in_eval_and_ema():
    _, fake = _pair()
    fake.eval()
    fake(torch.randn(2, 3, 16))
    fake.commit_micro_batch()
    assert fake.step_statistics()[1] == 0
    fake.train()
    xs = [torch.randn(2, 3, 16) * k for k in (1.0, 3.0)]
    fake(xs[0]); fake.commit_micro_batch(); fake.update_sigma_avg(*fake.step_statistics(), 0.9)
    first = float(per_token_std(xs[0], 1e-5).mean())
    assert float(fake.sigma_avg) == pytest.approx(first, rel=1e-6)  # EMA starts at the first value
    fake(xs[1]); fake.commit_micro_batch(); fake.update_sigma_avg(*fake.step_statistics(), 0.9)
    second = float(per_token_std(xs[1], 1e-5).mean())
    assert float(fake.sigma_avg) == pytest.approx(0.9 * first + 0.1 * second, rel=1e-6)


def test_remove_before_tracking_is_a_clear_error():
    _, fake = _pair()
    with pytest.raises(RuntimeError, match="step >= 1"):
        fake.remove()


def test_model_surgery_live_equals_stock_and_sigma_is_mean_over_micro_batches():
    model = tiny_model(dropout=0.0)
    x1, x2 = torch.randint(0, 127, (3, 16)), torch.randint(0, 127, (2, 16))
    ref = model(x1).logits
    make_removable(model)
    torch.testing.assert_close(model(x1).logits, ref, atol=1e-5, rtol=1e-5)
    # sigma_avg of ln_f over two micro-batches = mean of per-token std over all their tokens.
    captured = []
    h = model.transformer.ln_f.register_forward_pre_hook(lambda m, a: captured.append(a[0].detach()))
    model.train()
    tracker = SigmaTracker(model)
    for x in (x1, x2):
        model(input_ids=x, labels=x).loss.backward()
        tracker.commit_micro_batch()
    tracker.end_step()
    h.remove()
    expected = torch.cat([per_token_std(c, 1e-5).flatten() for c in captured]).mean()
    assert tracker.sigmas()["f"] == pytest.approx(float(expected), rel=1e-5)


def test_gradient_checkpointing_counts_each_micro_batch_once(monkeypatch):
    from transformers.models.gpt2 import modeling_gpt2

    from lnfree_core.train_setup import enable_checkpointing

    calls = []
    mlp_forward = modeling_gpt2.GPT2MLP.forward

    def counting_forward(self, h):
        calls.append(1)
        return mlp_forward(self, h)

    monkeypatch.setattr(modeling_gpt2.GPT2MLP, "forward", counting_forward)

    model = tiny_model()
    make_removable(model)
    enable_checkpointing(model)
    model.train()
    tracker = SigmaTracker(model)
    x = torch.randint(0, 127, (2, 16))
    model(input_ids=x, labels=x).loss.backward()
    tracker.commit_micro_batch()
    assert len(calls) == 4  # 2 blocks, each recomputed once during backward: checkpointing is on
    assert fakeln_modules(model)["mlp.0"].step_statistics()[1] == 2 * 16
    assert fakeln_modules(model)["qk.1"].step_statistics()[1] == 2 * 16
    # and the checkpointed gradients equal the plain ones
    g_ckpt = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    getattr(model, "activation_checkpointing_disable", None) and model.activation_checkpointing_disable()
    model(input_ids=x, labels=x).loss.backward()
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad, g_ckpt[n], atol=1e-6, rtol=1e-5)


def test_split_qk_v_paths_use_their_own_sigma_and_share_gamma():
    model = tiny_model()
    mods = make_removable(model)
    assert mods["qk.0"].weight is mods["v.0"].weight
    mods["qk.0"].remove(2.0)
    mods["v.0"].remove(5.0)
    split = model.transformer.h[0].attn.c_attn
    x = torch.randn(1, 4, 32)
    out = split(x)
    xc = x - x.mean(-1, keepdim=True)
    w, b = split.proj.weight, split.proj.bias
    y_qk = xc / 2.0 * mods["qk.0"].weight + mods["qk.0"].bias
    y_v = xc / 5.0 * mods["v.0"].weight + mods["v.0"].bias
    ref = torch.cat([y_qk @ w[:, :64] + b[:64], y_v @ w[:, 64:] + b[64:]], dim=-1)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_eager_and_sdpa_attention_agree_after_surgery_and_generate_works():
    from transformers import GPT2LMHeadModel

    from _tiny import tiny_config

    torch.manual_seed(0)
    outs = {}
    for impl in ("sdpa", "eager"):
        torch.manual_seed(0)
        m = GPT2LMHeadModel(tiny_config()).eval()
        m.config._attn_implementation = impl
        for mod in make_removable(m).values():
            mod.remove(1.3)
        x = torch.randint(0, 127, (2, 10))
        mask = torch.ones_like(x)
        mask[0, :3] = 0  # left padding
        outs[impl] = m(input_ids=x, attention_mask=mask).logits
        gen = m.generate(x[:1], max_new_tokens=4, do_sample=False, pad_token_id=0)
        assert gen.shape == (1, 14)
    torch.testing.assert_close(outs["sdpa"][1], outs["eager"][1], atol=1e-4, rtol=1e-4)


def test_ln_divisor_works_for_both_module_kinds():
    ln, fake = _pair()
    x = torch.randn(2, 3, 16)
    torch.testing.assert_close(ln_divisor(ln, x), per_token_std(x, 1e-5))
    fake.remove(3.0)
    assert torch.all(ln_divisor(fake, x) == 3.0)
