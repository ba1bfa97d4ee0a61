"""The full-size demo build and its quality statements (slow: minutes; `pytest -m slow`).

It also prints the paper's findings measured on the build (`demo findings`: attention sinks,
first-token norms, confidence-neuron ablation), the numbers of the README's demo section. They are
printed, not asserted: the full recipe does not show these effects yet (issue 13; see the README)."""

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
