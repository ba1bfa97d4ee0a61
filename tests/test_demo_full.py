"""The full-size demo build and its quality statements (slow: minutes; `pytest -m slow`).

It also prints the paper's findings measured on the build (`demo findings`: attention sinks,
first-token norms, confidence-neuron ablation), the numbers of the README's demo section. They are
printed, not asserted: the full recipe does not show these effects (issue 13); the findings size,
tested below, shows the first-token norm finding."""

from __future__ import annotations

import math

import pytest

from lnfree_core.demo.build import MAX_LN_FREE_GAP, MIN_UNIGRAM_MARGIN

CPU_BUDGET_S = 2 * 600  # 10 minutes on 2 cores, in CPU seconds (wall time depends on what else runs)


@pytest.mark.slow
def test_full_build_meets_its_quality_statements(tmp_path):
    from lnfree_core.demo import build_demo, demo_status
    from lnfree_core.models import load_model

    stages = []
    summary = build_demo(tmp_path / "demo", "full", progress=lambda stage, done, total: stages.append(stage))
    q = summary["quality"]
    print("\n".join(q["statements"]), f"\nbuild: {summary['build_seconds']:.0f} s wall, "
          f"{sum(summary['stage_cpu_seconds'].values()):.0f} s CPU, threads {summary['stage_threads']}")
    assert all(math.isfinite(v) for row in summary["ce"].values() for v in row.values())
    # the original model learned far more than token frequencies
    assert q["unigram_entropy"] - q["original_val_ce"] >= MIN_UNIGRAM_MARGIN >= 1.0
    assert q["original_far_below_unigram"]
    # removing LayerNorm costs at most 0.15 nats against the vanilla control
    assert abs(q["ln_free_val_ce"] - q["vanilla_val_ce"]) <= MAX_LN_FREE_GAP == 0.15
    assert q["ln_free_close_to_vanilla"]
    # fine-tuning did not wreck the original either way
    assert q["vanilla_val_ce"] <= q["original_val_ce"] + 0.05
    assert load_model(str(tmp_path / "demo" / "models" / "ln-free")).ln_free
    assert demo_status(tmp_path / "demo")["built"]
    assert summary["datasets"]["pile-filtered-demo"]["kept_sequences"] >= 64
    assert sum(summary["stage_cpu_seconds"].values()) <= CPU_BUDGET_S
    from lnfree_core.demo.findings import demo_findings, format_findings

    print(format_findings(demo_findings(tmp_path / "demo")))


# Issue 13, measured on the `findings` size (fine-tunes the shipped original, lnfree_core/demo/sizes.py):
# first-token centred norm ratio 1.26-2.32 (original) vs 1.00-1.18 (LN-free). The levels below leave
# room for a rebuild on another machine (bit-identical fine-tunes are not promised).
NORM_RATIO_ORIGINAL_MIN = 1.8  # largest first-token / other-token centred norm ratio of the original
NORM_RATIO_LN_FREE_MAX = 1.4  # ... and of the LN-free model: about 1, as in the paper


@pytest.mark.slow
def test_findings_build_shows_the_first_token_norm_finding(tmp_path):
    """The findings size (3-4 minutes on 2 cores): its quality statements, and the paper's first-token
    norm finding (section 5.3, Fig. 3): far above 1 with LayerNorm, about 1 once LN-free. Sinks and
    confidence neurons are printed, not asserted: this recipe does not show them (8% sinks in all three
    models, entropy changes below 0.2%; issue 13)."""
    from lnfree_core.demo import build_demo
    from lnfree_core.demo.findings import demo_findings, format_findings

    summary = build_demo(tmp_path / "demo", "findings")
    q = summary["quality"]
    assert q["original_far_below_unigram"] and q["ln_free_close_to_vanilla"], q["statements"]
    assert summary["models"]["original"]["training"]["source"] == "shipped"  # only the fine-tunes ran here
    found = demo_findings(tmp_path / "demo")
    print(format_findings(found))
    orig, vanilla, ln_free = (found["models"][n] for n in ("original", "vanilla", "ln-free"))
    assert orig["norm_ratio"] >= NORM_RATIO_ORIGINAL_MIN and vanilla["norm_ratio"] >= NORM_RATIO_ORIGINAL_MIN
    assert ln_free["norm_ratio"] <= NORM_RATIO_LN_FREE_MAX < orig["norm_ratio"]
