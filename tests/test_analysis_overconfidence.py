"""Overconfidence (sections 5.4, 6.1): entropy, CE, top-token confidence, reliability and ECE against a
direct numpy computation from the logits; the cached entry point, the ablation gap and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from _tiny import tiny_model


def _numpy_reference(model, tokens):
    with torch.no_grad():
        logits = model(torch.as_tensor(tokens)).logits.double().numpy()[:, :-1]  # [n, T-1, V]
    z = logits - logits.max(-1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(-1, keepdims=True)
    y = tokens[:, 1:]
    ce = -np.log(np.take_along_axis(p, y[..., None], -1)[..., 0])
    h = -(p * np.log(p)).sum(-1)
    conf = p.max(-1)
    hit = p.argmax(-1) == y
    return ce, h, conf, hit


def test_token_calibration_matches_numpy():
    from lnfree_core.analysis.overconfidence import token_calibration

    model = tiny_model(seed=4)
    tokens = np.random.default_rng(0).integers(0, 128, size=(5, 12))
    cal = token_calibration(model, tokens, batch_size=2, precision="fp32")
    ce, h, conf, hit = _numpy_reference(model, tokens)
    np.testing.assert_allclose(cal.ce, ce, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(cal.entropy, h, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(cal.confidence, conf, rtol=1e-5)
    assert np.array_equal(cal.correct, hit)


def test_reliability_and_ece_match_a_loop_over_bins():
    from lnfree_core.analysis.overconfidence import reliability

    g = np.random.default_rng(1)
    conf = np.concatenate([g.uniform(0, 1, 500), [0.0, 1.0, 0.2, 0.4]])  # edges land in the lower bin
    hit = g.uniform(0, 1, conf.size) < conf ** 2
    r = reliability(conf, hit, n_bins=5)
    ece, N = 0.0, conf.size
    for m in range(5):
        lo, hi = m / 5, (m + 1) / 5
        sel = (conf > lo) & (conf <= hi) if m else (conf >= lo) & (conf <= hi)
        assert r.count[m] == sel.sum()
        if sel.any():
            assert r.confidence[m] == pytest.approx(conf[sel].mean())
            assert r.accuracy[m] == pytest.approx(hit[sel].mean())
            ece += sel.sum() / N * abs(hit[sel].mean() - conf[sel].mean())
    assert r.ece == pytest.approx(ece, rel=1e-12)
    assert r.count.sum() == N
    perfect = reliability([0.25, 0.25, 0.25, 0.25], [1, 0, 0, 0], n_bins=4)  # calibrated: ECE 0
    assert perfect.ece == pytest.approx(0.0, abs=1e-12)


def test_overconfidence_eval_is_cached_and_summarised(tmp_path, tiny_model_dir, tiny_dataset):
    from lnfree_core.analysis.cached import DataSpec
    from lnfree_core.analysis.cached_experiments import overconfidence_eval

    data = DataSpec(str(tiny_dataset), n=4, seq_len=16)
    a = overconfidence_eval(str(tiny_model_dir), data, cache_dir=tmp_path / "c")
    b = overconfidence_eval(str(tiny_model_dir), data, cache_dir=tmp_path / "c")
    assert a.entry.path == b.entry.path  # read back, not recomputed
    from lnfree_core.models import load_model

    model = load_model(str(tiny_model_dir)).model
    ce, h, conf, hit = _numpy_reference(model, data.load())
    s = b.summary(10)
    assert s.mean_ce == pytest.approx(ce.mean(), rel=1e-5) and s.mean_entropy == pytest.approx(h.mean(), rel=1e-5)
    assert s.gap == pytest.approx(ce.mean() - h.mean(), abs=1e-4)
    assert s.accuracy == pytest.approx(hit.mean()) and s.tokens == 4 * 15
    assert b.to_json(10)["reliability"]["count"] == b.reliability(10).count.astype(int).tolist()


def test_ablation_gap_compares_the_ablated_vanilla_model_with_the_ln_free_one():
    from lnfree_core.analysis.cached_experiments import ablation_gap

    abl = {"baseline": {"ce": 3.0, "entropy": 2.9},
           "cumulative": [{"neurons": [5], "ce": 3.01, "entropy": 2.85},
                          {"neurons": [5, 7], "ce": 3.02, "entropy": 2.80}]}
    g = ablation_gap(abl, {"mean_entropy": 2.79, "mean_ce": 3.08})
    assert g["k"] == 2 and g["entropy_gap"] == pytest.approx(-0.01) and g["ce_gap"] == pytest.approx(0.06)


def test_cli_overconfidence_json_and_csv(tmp_path, tiny_model_dir, tiny_dataset, capsys):
    from lnfree_core.__main__ import main

    out_csv = tmp_path / "oc.csv"
    rc = main(["analyze", "overconfidence", "--model", str(tiny_model_dir), "--dataset", str(tiny_dataset),
               "--n", "3", "--seq-len", "16", "--top-k", "2", "--bins", "5", "--cache-dir", str(tmp_path / "c"),
               "--json", "--csv", str(out_csv)])
    assert rc == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert len(rows) == 1 and rows[0]["tokens"] == 3 * 15 and len(rows[0]["reliability"]["count"]) == 5
    assert len(rows[0]["ablation"]["cumulative"]) == 2
    assert out_csv.read_text().splitlines()[0].startswith("model,label,ln_free,dataset")
    assert main(["analyze", "overconfidence", "--model", str(tiny_model_dir), "--dataset", str(tiny_dataset),
                 "--bins", "0"]) == 2


def test_cli_overconfidence_and_ioi_refuse_bad_sizes_and_outputs_before_loading(tmp_path, tiny_dataset, capsys):
    """A model spec that does not exist: the error must be about the argument, i.e. found before any load."""
    from lnfree_core.__main__ import main

    base = ["analyze", "overconfidence", "--model", "no/such-model", "--dataset", str(tiny_dataset), "--no-cache"]
    assert main(base + ["--seq-len", "1"]) == 2
    assert "--seq-len must be >= 2" in capsys.readouterr().err
    assert main(base + ["--n", "0"]) == 2
    assert "--n must be >= 1" in capsys.readouterr().err
    assert main(base + ["--csv", str(tmp_path / "missing" / "oc.csv")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["analyze", "ioi", "--model", "no/such-model", "--csv", str(tmp_path / "missing" / "i.csv")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["analyze", "dla", "--model", "no/such-model", "--dataset", str(tiny_dataset), "--seq-len", "0"]) == 2
    assert "--seq-len must be >= 2" in capsys.readouterr().err
