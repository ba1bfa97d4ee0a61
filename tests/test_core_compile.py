"""torch.compile: every block stays compiled through all removal events, with a bounded number of
compilations, and the traced FakeLN / LN_qk-LN_v path computes eq. (1)/(2) as the eager one does."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch._dynamo
import torch._dynamo.testing

from _tiny import tiny_model
from lnfree_core.method.adapters.gpt2 import SplitLNQKV
from lnfree_core.config import TrainConfig
from lnfree_core.method.fakeln import FakeLayerNorm
from lnfree_core.rundir import read_jsonl
from lnfree_core.method.surgery import live_blocks
from lnfree_core.train import train


def test_a_compiled_run_compiles_each_block_once_and_keeps_every_block_compiled(tmp_path, tiny_dataset, monkeypatch):
    n_layers = 10  # more than dynamo's recompile limit (8): a per-layer guard would exhaust it
    model_dir = tmp_path / "tiny10"
    tiny_model(n_layer=n_layers, n_embd=16, n_head=2).save_pretrained(str(model_dir))
    compiles, calls = [], [0]

    def backend(gm, example_inputs):  # counts compilations, and runs of the compiled graphs
        compiles.append(gm)

        def run(*args):
            calls[0] += 1
            return gm.forward(*args)

        return run

    real_compile = torch.nn.Module.compile
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, **kw: real_compile(self, backend=backend))
    torch._dynamo.reset()
    steps = 40
    cfg = TrainConfig(model=str(model_dir), dataset=str(tiny_dataset), schedule="auto", out=str(tmp_path / "run"),
                      compile=True, save_every=100,
                      overrides=dict(max_steps=steps, micro_batch_size=2, grad_accum_steps=1, seq_len=16,
                                     warmup_steps=2, lr=1e-3, min_lr=1e-4))
    try:
        res = train(cfg)
    finally:
        torch._dynamo.reset()
    assert res.state == "finished"
    rows = read_jsonl(Path(cfg.out) / "metrics.jsonl")
    removals = [r for r in rows if r.get("kind") == "removal"]
    assert len(removals) == 3 * n_layers + 1  # every removal event happened during the compiled run
    from lnfree_core.models import load_model

    assert live_blocks(load_model(cfg.out).model) == []
    # One compilation shared by all blocks (same code, removal flags are tensors), never more than 2.
    assert 1 <= len(compiles) <= 2, f"{len(compiles)} compilations"
    # Every block ran its compiled graph at every step: none fell back to eager after a removal.
    assert calls[0] == n_layers * steps


def _reference(x, gamma, beta, eps, sigma_bar):
    """Eq. (1) if sigma_bar is None, else eq. (2), written out from the definition."""
    mu = x.mean(-1, keepdim=True)
    if sigma_bar is None:
        div = torch.sqrt(((x - mu) ** 2).mean(-1, keepdim=True) + eps)
    else:
        div = sigma_bar
    return (x - mu) / div * gamma + beta


@pytest.mark.parametrize("state", ["live", "removed"])
def test_traced_fakeln_matches_the_definition_values_and_gradients(state):
    torch.manual_seed(0)
    d = 12
    w = torch.nn.Parameter(torch.randn(d))
    b = torch.nn.Parameter(torch.randn(d))
    fake = FakeLayerNorm(w, b, 1e-5, "mlp.0").train()
    if state == "removed":
        fake.remove(2.5)
    counter = torch._dynamo.testing.CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(fake, backend=counter, fullgraph=True)
    x = (3 * torch.randn(2, 5, d) + 1).requires_grad_()
    y = compiled(x)
    y.pow(2).sum().backward()
    got = (y.detach(), x.grad.clone(), w.grad.clone(), b.grad.clone())
    x2 = x.detach().clone().requires_grad_()
    w2, b2 = w.detach().clone().requires_grad_(), b.detach().clone().requires_grad_()
    ref = _reference(x2, w2, b2, 1e-5, 2.5 if state == "removed" else None)
    ref.pow(2).sum().backward()
    for g, r in zip(got, (ref.detach(), x2.grad, w2.grad, b2.grad)):
        torch.testing.assert_close(g, r, rtol=1e-5, atol=1e-5)
    assert counter.frame_count == 1
    if state == "live":  # the live block tracks sigma_{b,s} in the compiled forward too
        fake.commit_micro_batch()
        s, n = fake.step_statistics()
        sd = torch.sqrt(x.detach().var(-1, correction=0) + 1e-5)
        assert n == 10 and float(s) == pytest.approx(float(sd.sum()), rel=1e-5)


def test_traced_split_path_matches_the_definition_in_every_state_without_recompiling():
    torch.manual_seed(0)
    d = 8
    from transformers.pytorch_utils import Conv1D

    ln = torch.nn.LayerNorm(d)
    with torch.no_grad():
        ln.weight.copy_(torch.randn(d))
        ln.bias.copy_(torch.randn(d))
    proj = Conv1D(3 * d, d)
    with torch.no_grad():
        proj.bias.copy_(torch.randn(3 * d))
    split = SplitLNQKV(ln, proj, 0).train()
    counter = torch._dynamo.testing.CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(split, backend=counter, fullgraph=True)
    x = 2 * torch.randn(3, 4, d) + 0.5
    states = [(None, None), (1.7, None), (1.7, 0.6)]  # all live; LN_qk removed; both removed (different sigma_bar)
    for s_qk, s_v in states:
        if s_qk is not None and not split.ln_qk.is_removed:
            split.ln_qk.remove(s_qk)
        if s_v is not None and not split.ln_v.is_removed:
            split.ln_v.remove(s_v)
        for p in (ln.weight, ln.bias, proj.weight, proj.bias):
            p.grad = None
        xa = x.clone().requires_grad_()
        out = compiled(xa)
        out.sin().sum().backward()
        got = [out.detach(), xa.grad] + [p.grad.clone() for p in (ln.weight, ln.bias, proj.weight, proj.bias)]
        # Independent: q,k from eq. with sigma_qk, v with sigma_v, through the stock projection x @ W + b.
        gamma, beta = ln.weight.detach().clone().requires_grad_(), ln.bias.detach().clone().requires_grad_()
        W, B = proj.weight.detach().clone().requires_grad_(), proj.bias.detach().clone().requires_grad_()
        xr = x.clone().requires_grad_()
        qk = _reference(xr, gamma, beta, ln.eps, s_qk) @ W[:, : 2 * d] + B[: 2 * d]
        v = _reference(xr, gamma, beta, ln.eps, s_v) @ W[:, 2 * d:] + B[2 * d:]
        ref = torch.cat([qk, v], -1)
        ref.sin().sum().backward()
        want = [ref.detach(), xr.grad, gamma.grad, beta.grad, W.grad, B.grad]
        for g, r in zip(got, want):
            torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-5)
    assert counter.frame_count == 1  # the removals changed no guard
