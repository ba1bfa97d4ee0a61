"""`eval` and `analyze` commands end to end on a saved tiny model and a local token file, checked
against direct computations."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lnfree_core.__main__ import main
from lnfree_core.method.adapters import adapter_for
from lnfree_core.analysis.confidence import confidence_scores
from lnfree_core.models import load_model
from test_analysis_support import make_ln_free, tiny_gpt2

SEQ = 12


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    tiny_gpt2(seed=31).save_pretrained(str(root / "orig"))
    free = make_ln_free(tiny_gpt2(seed=31), sigma=2.0)
    adapter_for(free).to_stock(free).save_pretrained(str(root / "free"))  # a stock LN-free export
    rng = np.random.default_rng(32)
    rows = rng.integers(0, 97, size=(6, SEQ))  # rows of exactly SEQ tokens: one sequence each
    with open(root / "data.jsonl", "w") as f:
        for r in rows:
            f.write(json.dumps({"input_ids": r.tolist()}) + "\n")
    return root, rows


def _run(capsys, *argv):
    rc = main(list(argv))
    out = capsys.readouterr().out
    return rc, out


def _ref_losses(path, rows):
    model = load_model(str(path)).model
    with torch.no_grad():
        x = torch.as_tensor(rows)
        logits = model(x).logits
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1),
                           reduction="none").view(len(rows), -1).numpy().astype(np.float64)


def test_eval_json_and_table(workspace, capsys):
    root, rows = workspace
    common = ["--dataset", str(root / "data.jsonl"), "--seq-len", str(SEQ), "--cache-dir", str(root / "cache")]
    rc, out = _run(capsys, "eval", "--model", str(root / "orig"), *common, "--json")
    assert rc == 0
    got = json.loads(out)
    ref = _ref_losses(root / "orig", rows)
    assert got["model"] == str(root / "orig") and got["tokens"] == ref.size and got["ln_free"] is False
    assert got["mean"] == pytest.approx(ref.mean(), rel=1e-6)
    assert got["median"] == pytest.approx(np.median(ref), rel=1e-6)
    assert got["p2.5-97.5"] == pytest.approx(list(np.percentile(ref, [2.5, 97.5])), rel=1e-6)
    assert got["p0.1-99.9"] == pytest.approx(list(np.percentile(ref, [0.1, 99.9])), rel=1e-6)

    md, cs = root / "t.md", root / "t.csv"
    rc, out = _run(capsys, "eval", "--model", str(root / "orig"), "--label", "orig", "--model", str(root / "free"),
                   "--label", "free", *common, "--markdown", str(md), "--csv", str(cs))
    assert rc == 0
    free_mean = _ref_losses(root / "free", rows).mean()
    best = min(ref.mean(), free_mean)
    lines = md.read_text().splitlines()
    assert lines[2] == f"| orig | {'**' if ref.mean() == best else ''}{ref.mean():.4f}{'**' if ref.mean() == best else ''} |"
    assert lines[3].startswith(f"| free | ") and f"[+{free_mean - best:.4f}]" in lines[3]
    rows_csv = list(csv.DictReader(cs.open()))
    assert rows_csv[1]["ln_free"] == "1" and float(rows_csv[1][f"{root / 'data.jsonl'}"]) == pytest.approx(free_mean)
    assert md.read_text() in out  # the table is printed as well


def test_analyze_outliers(workspace, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    root, rows = workspace
    common = ["--dataset", str(root / "data.jsonl"), "--seq-len", str(SEQ), "--cache-dir", str(root / "cache")]
    rc, out = _run(capsys, "analyze", "outliers", "--model", str(root / "free"), *common, "--by", "max",
                   "--top", "3", "--threshold", "5", "--sequence", "1", "--compare", str(root / "orig"), "--json")
    assert rc == 0
    got = json.loads(out)
    la, lb = _ref_losses(root / "free", rows), _ref_losses(root / "orig", rows)
    assert [r["index"] for r in got["ranked"]] == list(np.argsort(-la.max(1), kind="stable")[:3])
    assert got["exceeding"] == [i for i in range(len(rows)) if (la[i] > 5).any()]
    seq = got["sequence"]
    first = int(np.flatnonzero(la[1] > 5)[0]) + 1
    assert seq["first_exceeding"]["position"] == first and seq["first_exceeding"]["token_id"] == rows[1][first]
    assert seq["tokens"][0]["loss"] is None and seq["tokens"][3]["loss"] == pytest.approx(la[1, 2], rel=1e-6)
    diffs = [r["diff"] for r in got["compare"]["tokens"][1:]]
    np.testing.assert_allclose(diffs, lb[1] - la[1], rtol=1e-5, atol=1e-6)
    rc, out = _run(capsys, "analyze", "outliers", "--model", str(root / "free"), *common, "--sequence", "1")
    assert rc == 0 and "(Token:Loss)" in out and f"{rows[1][0]}:N/A" in out


def test_analyze_dla_first_token_confidence(workspace, capsys):
    root, rows = workspace
    common = ["--dataset", str(root / "data.jsonl"), "--seq-len", str(SEQ), "--n", "4", "--cache-dir",
              str(root / "cache"), "--n-boot", "50", "--json"]
    nm = {}
    for name in ("orig", "free"):
        rc, out = _run(capsys, "analyze", "dla", "--model", str(root / name), *common)
        assert rc == 0
        nm[name] = json.loads(out)["nmae"]["overall"]
    assert nm["free"] < 1e-6 < 1.0 < nm["orig"]

    rc, out = _run(capsys, "analyze", "first-token", "--model", str(root / "orig"), *common, "--sink-threshold",
                   "0.05", "--sink-definition", "head-mean")
    got = json.loads(out)
    assert rc == 0 and got["n_sequences"] == 4 and got["sinks"]["definition"] == "head-mean"
    assert got["norms"]["points"] == [f"{k}.{l}" for l in range(2) for k in ("resid_pre", "resid_mid", "resid_post")]
    assert got["norms"]["norm"] == "centred"
    rc, out = _run(capsys, "analyze", "first-token", "--model", str(root / "orig"), *common)
    sk = json.loads(out)["sinks"]
    assert rc == 0 and sk["definition"] == "query" and sk["ci_method"] == "batches" and "batches of 8" in sk["ci_label"]
    assert main(["analyze", "first-token", "--model", str(root / "orig"), *common, "--sink-threshold", "0.33"]) == 2

    common = [c for c in common if c not in ("--n-boot", "50")]
    rc, out = _run(capsys, "analyze", "confidence", "--model", str(root / "orig"), *common, "--top-k", "2")
    got = json.loads(out)
    assert rc == 0 and [t["neuron"] for t in got["top"]] == confidence_scores(load_model(str(root / "orig")).model).top(2)
    assert len(got["ablation"]["cumulative"]) == 2 and got["ablated"] == [t["neuron"] for t in got["top"]]
    assert got["ablation"]["abs_delta_ce"]["tokens"] == 4 * (SEQ - 1)
    # the same neurons in another variant: --neurons-from the first model
    rc, out = _run(capsys, "analyze", "confidence", "--model", str(root / "free"), *common, "--top-k", "2",
                   "--neurons-from", str(root / "orig"))
    assert rc == 0 and json.loads(out)["ablated"] == got["ablated"]


def test_errors_exit_2(workspace, capsys):
    root, _ = workspace
    assert main(["eval", "--model", str(root / "orig"), "--dataset", str(root / "missing.jsonl")]) == 2
    assert main(["eval", "--model", str(root / "orig"), "--label", "a", "--label", "b",
                 "--dataset", str(root / "data.jsonl")]) == 2
    assert main(["analyze", "dla", "--model", str(root / "nope"), "--dataset", str(root / "data.jsonl"),
                 "--cache-dir", str(root / "cache")]) == 2
