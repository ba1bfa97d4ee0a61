"""Every non-GPT-2 family end to end on tiny random-init models: a 40-step LN-removal run with the
real trainer (`python -m lnfree_core train --schedule auto`) lowers the loss and ends LN-free, the run
exports to a stock folder that equals it, and every analysis runs on the vanilla model and the export."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from _tiny_families import FAMILIES, tiny_family_model
from lnfree_core.method.adapters import adapter_for
from lnfree_core.analysis.ce import per_token_ce
from lnfree_core.analysis.confidence import confidence_scores, unembed_svd
from lnfree_core.analysis.dla import head_attribution
from lnfree_core.analysis.first_token import first_token_stats
from lnfree_core.analysis.hooks import first_input, hooks
from lnfree_core.analysis.neuron_ablation import ablate_neurons
from lnfree_core.analysis.nmae import nmae
from lnfree_core.analysis.sinks import sink_rate
from lnfree_core.export import export_model
from lnfree_core.models import load_model

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module", params=FAMILIES)
def trained(request, tmp_path_factory):
    """(family, vanilla folder, run dir, token array): one 40-step CLI run per family."""
    family = request.param
    root = tmp_path_factory.mktemp(family)
    tiny_family_model(family).save_pretrained(str(root / "model"))
    from transformers import GPT2Tokenizer  # a stand-in tokenizer of the base model, for the export to copy

    GPT2Tokenizer(vocab={"a": 0, "b": 1, "ab": 2}, merges=[("a", "b")]).save_pretrained(str(root / "model"))
    rng = np.random.default_rng(0)
    rows = []
    with open(root / "tokens.jsonl", "w") as fh:  # ids 2..1001 with a learnable stride-3 pattern
        for _ in range(128):
            s = int(rng.integers(0, 1000))
            row = [(s + 3 * i + int(rng.integers(0, 2))) % 1000 + 2 for i in range(64)]
            rows.append(row)
            fh.write(json.dumps({"input_ids": row}) + "\n")
    cmd = [sys.executable, "-m", "lnfree_core", "train", "--model", str(root / "model"), "--dataset",
           str(root / "tokens.jsonl"), "--schedule", "auto", "--out", str(root / "run"), "--device", "cpu",
           "--max-steps", "40", "--batch-size", "4", "--grad-accum", "1", "--seq-len", "32", "--lr", "3e-3",
           "--min-lr", "1e-3", "--warmup-steps", "2", "--save-every", "20"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return family, root / "model", root / "run", np.asarray(rows)[:6, :32]


def test_run_lowers_loss_removes_every_block_and_exports_exactly(trained, tmp_path):
    family, _, run, _ = trained
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if r["type"] == "step"]
    assert len(losses) == 40
    assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.2, (family, losses[:5], losses[-5:])
    removals = [r for r in rows if r["type"] == "event" and r["kind"] == "removal"]
    assert len(removals) == 3 * 2 + 1  # the paper's four groups (Qwen3's q/k norms follow LN_qk)
    loaded = load_model(str(run))
    assert loaded.ln_free
    res = export_model(str(run), tmp_path / "exp")
    assert res.ln_free and res.logit_max_abs_diff < 1e-4
    cfg = json.loads((tmp_path / "exp" / "config.json").read_text())
    assert cfg["model_type"] == family
    assert cfg.get("layer_norm_eps", cfg.get("rms_norm_eps")) >= 1e12  # the huge-eps export
    card = (tmp_path / "exp" / "README.md").read_text()
    assert f"- {family}" in card and f"{type(loaded.model).__name__}.from_pretrained" in card
    assert (tmp_path / "exp" / "tokenizer_config.json").exists()  # the base model's tokenizer, copied


def _independent_de(model, tokens, layer, head):
    """DE of one head (eq. 4) computed with the model's own modules: the head's write c is
    o_proj(z with only this head) - o_proj(0), and DE = (N_f(r) - N_f(r - c)) . u_y."""
    ad = adapter_for(model)
    cap = {}
    proj, norm = ad.attn_out_proj(model, layer), ad.final_norm(model)
    with hooks(pre=[(proj, lambda m, a, k: cap.__setitem__("z", first_input(a, k))),
                    (norm, lambda m, a, k: cap.__setitem__("r", first_input(a, k)))]):
        with torch.no_grad():
            model(torch.as_tensor(tokens))
    z, r = cap["z"], cap["r"]
    d_head = z.shape[-1] // ad.n_heads(model)
    keep = torch.zeros_like(z)
    keep[..., head * d_head:(head + 1) * d_head] = z[..., head * d_head:(head + 1) * d_head]
    with torch.no_grad():
        c = proj(keep) - proj(torch.zeros_like(z))
        w_u = model.get_output_embeddings().weight  # [vocab, d]
        y = torch.as_tensor(tokens)[:, 1:]
        de = ((norm(r) - norm(r - c)) @ w_u.T)[:, :-1].gather(-1, y[..., None]).squeeze(-1)  # [n, T-1]
    return de.double().mean(1).numpy()


@pytest.mark.parametrize("which", ["vanilla", "ln-free"])
def test_every_analysis_runs_on_the_family(trained, which):
    family, vanilla, run, tokens = trained
    model = load_model(str(vanilla if which == "vanilla" else run)).model
    ce = per_token_ce(model, tokens, precision="fp32")
    assert np.isfinite(np.asarray(ce)).all()
    ft = first_token_stats(model, tokens, precision="fp32")
    assert ft.first_attn.shape == (6, 2, 4) and np.isfinite(ft.first_norm).all()
    assert ((ft.first_attn >= 0) & (ft.first_attn <= 1)).all() and 0 <= sink_rate(ft.first_attn).rate <= 1
    # query 0 attends only to position 0 (A[0, 0] = 1 > every tau < 1): the family's patterns include it
    assert ft.n_queries == 32 and (ft.sink_counts >= 1).all() and (ft.sink_counts <= 32).all()
    attr = head_attribution(model, tokens, precision="fp32")
    err = nmae(attr, n_boot=50)
    assert np.allclose(attr.de[:, 1, 2], _independent_de(model, tokens, 1, 2), rtol=1e-4, atol=1e-6)
    if which == "ln-free":  # a frozen final norm is affine: DLA == DE exactly (section 5.1)
        assert np.abs(attr.dla - attr.de).max() < 1e-9
    else:
        assert np.abs(attr.dla - attr.de).max() > 1e-6
    # eq. 9/10 written out: per head mean |DLA - DE| / mean |DE| over sequences, then the mean over heads
    want = 100 * np.mean(np.abs(attr.dla - attr.de).mean(0) / np.abs(attr.de).mean(0))
    assert err.overall == pytest.approx(want, rel=1e-9, abs=1e-9)
    sc = confidence_scores(model)
    assert sc.score.shape == (adapter_for(model).mlp_out_weight(model, 1).shape[0],)
    top = sc.top(3)
    assert unembed_svd(model, top).cosines.shape == (3, 64)
    abl = ablate_neurons(model, tokens, top)
    assert np.isfinite(abl.baseline_ce) and len(abl.cumulative_ce) == 3
