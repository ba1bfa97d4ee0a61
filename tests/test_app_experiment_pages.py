"""The IOI patching, Overconfidence and Benchmarks pages under AppTest: they show exactly the numbers of
lnfree_core.analysis (computed again here without the cache)."""

from __future__ import annotations

import json

import pytest

import test_app_support as S
from _tiny import save_gpt2_vocab_pair
from test_app_compare_pages import N_SEQ, SEQ_LEN, by_columns, cached_suite, chart_by_title


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    return cached_suite(tmp_path_factory.mktemp("experiments-suite"))


@pytest.fixture(scope="module")
def gpt2_vocab_pair(tmp_path_factory):
    """A tiny GPT-2 over the full GPT-2 vocabulary (a folder) and its LN-free copy (a run checkpoint, every
    FakeLN block removed)."""
    base = tmp_path_factory.mktemp("gpt2-vocab")
    save_gpt2_vocab_pair(base / "original", base / "runs" / "tiny-lnfree", seed=11)
    return {"original": base / "original", "lnfree": base / "runs" / "tiny-lnfree", "runs": base / "runs",
            "cache": base / "cache"}


def test_ioi_page_heatmaps_and_improvement_score(gpt2_vocab_pair):
    from lnfree_core.analysis.cached_experiments import ioi_eval
    from lnfree_core.analysis.patching import improvement_score

    p = gpt2_vocab_pair
    specs = [str(p["original"]), str(p["lnfree"])]
    at = S.new_app(p["runs"], timeout=180)
    for k, v in {"analysis.cache_dir": str(p["cache"]), "analysis.models": specs, "ioi.n": 8}.items():
        at.session_state[k] = v
    S.open_page(at, "pages/ioi_patching.py")
    assert not at.error, [e.value for e in at.error]
    direct = {s: ioi_eval(s, n=8, cache_dir=None) for s in specs}
    assert direct[specs[1]].ln_free and not direct[specs[0]].ln_free
    heat = next(iter(S.chart_datasets(chart_by_title(at, "activation patching")).values()))
    mine = heat[(heat["model"] == "original") & (heat["method"] == "activation patching")].sort_values(["layer", "pos"])
    assert mine["value"].tolist() == pytest.approx(direct[specs[0]].patching.normalised("act").ravel().tolist(),
                                                   rel=1e-9, abs=1e-12)
    chart_by_title(at, "attribution patching")
    chart_by_title(at, "error (attribution - activation)")
    imp = improvement_score(direct[specs[0]].patching, direct[specs[1]].patching)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["improvement score, mean over layers"] == f"{imp['mean']:+.4f}"
    assert metrics["standard deviation over layers"] == f"{imp['std']:.4f}"


def test_ioi_page_says_when_a_model_cannot_write_the_prompts(suite):
    at = S.new_app(suite["runs"], timeout=120)
    for k, v in {"analysis.cache_dir": str(suite["cache"]), "analysis.models": [str(suite["original"])],
                 "ioi.n": 4}.items():
        at.session_state[k] = v
    S.open_page(at, "pages/ioi_patching.py")
    assert any("IOI is unavailable" in e.value for e in at.error)


def test_overconfidence_page_shows_the_library_numbers(suite):
    from lnfree_core.analysis.cached import DataSpec
    from lnfree_core.analysis.cached_experiments import overconfidence_eval

    specs = [str(suite["original"]), str(suite["vanilla"]), str(suite["lnfree"])]
    at = S.new_app(suite["runs"], timeout=180)
    for k, v in {"analysis.cache_dir": str(suite["cache"]), "analysis.models": specs,
                 "analysis.datasets": [str(suite["data"])], "analysis.n": N_SEQ, "analysis.seq_len": SEQ_LEN,
                 "oc.top_k": 2,
                 "oc.bins": 5}.items():
        at.session_state[k] = v
    S.open_page(at, "pages/overconfidence.py")
    assert not at.error, [e.value for e in at.error]
    data = DataSpec(str(suite["data"]), n=N_SEQ, seq_len=SEQ_LEN)
    table = by_columns(at, "model", "mean_entropy", "mean_ce", "ece").set_index("model")
    for spec, name in zip(specs, ["original", "tiny-vanilla", "tiny-lnfree"]):
        s = overconfidence_eval(spec, data, cache_dir=None, precision="fp32").summary(5)
        assert table.loc[name, "mean_entropy"] == pytest.approx(s.mean_entropy, rel=1e-6)
        assert table.loc[name, "ece"] == pytest.approx(s.ece, rel=1e-6)
    gaps = by_columns(at, "model with LN", "LN-free model", "entropy_gap")
    assert len(gaps) == 2 and set(gaps["LN-free model"]) == {"tiny-lnfree"}
    chart_by_title(at, "reliability")


def test_benchmarks_page_with_a_local_task(gpt2_vocab_pair, tmp_path):
    pytest.importorskip("lm_eval")
    from lnfree_core.analysis.cached_experiments import BenchTask, benchmark_eval

    p = gpt2_vocab_pair
    data = tmp_path / "mc.jsonl"
    docs = [{"q": "The sky is", "c": ["blue", "made of cheese"], "y": 0},
            {"q": "Two plus two is", "c": ["four", "seven"], "y": 0},
            {"q": "Fish live in", "c": ["trees", "water"], "y": 1}]
    data.write_text("".join(json.dumps(d) + "\n" for d in docs))
    yml = tmp_path / "page_mc.yaml"
    yml.write_text(f"task: page_mc\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    validation: {data}\n"
                   "output_type: multiple_choice\nvalidation_split: validation\ndoc_to_text: '{{q}}'\n"
                   "doc_to_choice: '{{c}}'\ndoc_to_target: '{{y}}'\nmetric_list:\n  - metric: acc\n"
                   "  - metric: acc_norm\n")
    specs = [str(p["original"]), str(p["lnfree"])]
    at = S.new_app(p["runs"], timeout=240)
    for k, v in {"analysis.cache_dir": str(p["cache"]), "analysis.models": specs, "bench.tasks": [],
                 "bench.yaml": str(yml)}.items():
        at.session_state[k] = v
    S.open_page(at, "pages/benchmarks.py")
    assert not at.error, [e.value for e in at.error]
    shown = by_columns(at, "task", "metric")
    for spec, name in zip(specs, ["original", "tiny-lnfree"]):
        sc = benchmark_eval(spec, BenchTask("page_mc", task_yaml=str(yml)), cache_dir=None).score
        assert shown.loc[0, name] == f"{100 * sc.value:.1f} ± {100 * (sc.stderr or 0):.1f}"
    chart_by_title(at, "accuracy per task")


def test_benchmarks_page_offline_leaves_hub_tasks_out_and_says_so(gpt2_vocab_pair):
    pytest.importorskip("lm_eval")
    p = gpt2_vocab_pair
    at = S.new_app(p["runs"], timeout=120)
    for k, v in {"analysis.cache_dir": str(p["cache"]), "analysis.models": [str(p["original"])]}.items():
        at.session_state[k] = v
    S.open_page(at, "pages/benchmarks.py")
    assert not at.error, [e.value for e in at.error]
    assert any("not reachable" in c.value and "hellaswag" in c.value for c in at.caption)
    assert any("No benchmark results" in i.value for i in at.info)
