"""Table 1 formatting: best per dataset (within a group) in bold, LN-free gaps in brackets, CSV round trip."""

from __future__ import annotations

import csv
import io

import pytest

from lnfree_core.analysis.tables import TableEntry, ce_table

# Table 1 of the paper, GPT-2 Small and Medium rows.
PAPER = [
    ("GPT-2 Small original", "small", False, {"OWT": 3.1006, "Pile": 2.8450, "Pile-filtered": 2.7899}),
    ("GPT-2 Small vanilla", "small", False, {"OWT": 3.0126, "Pile": 2.8511, "Pile-filtered": 2.8112}),
    ("GPT-2 Small LN-free", "small", True, {"OWT": 3.0797, "Pile": 2.8852, "Pile-filtered": 2.8757}),
    ("GPT-2 Medium original", "medium", False, {"OWT": 2.8145, "Pile": 2.5163, "Pile-filtered": 2.5390}),
    ("GPT-2 Medium vanilla", "medium", False, {"OWT": 2.7390, "Pile": 2.5752, "Pile-filtered": 2.5724}),
    ("GPT-2 Medium LN-free", "medium", True, {"OWT": 2.7642, "Pile": 2.6579, "Pile-filtered": 2.6352}),
]


def _table():
    entries = [TableEntry(m, d, v, ln_free=lf, group=g) for m, g, lf, means in PAPER for d, v in means.items()]
    return ce_table(entries)


def test_paper_cells_reproduced():
    t = _table()
    assert t.cell_text("GPT-2 Small LN-free", "OWT") == "3.0797 [+0.0671]"
    assert t.cell_text("GPT-2 Small LN-free", "Pile") == "2.8852 [+0.0402]"
    assert t.cell_text("GPT-2 Small LN-free", "Pile-filtered") == "2.8757 [+0.0858]"
    assert t.cell_text("GPT-2 Medium LN-free", "Pile") == "2.6579 [+0.1416]"
    assert t.cell_text("GPT-2 Small vanilla", "OWT") == "**3.0126**"
    assert t.cell_text("GPT-2 Small original", "Pile") == "**2.8450**"
    assert t.cell_text("GPT-2 Small original", "OWT") == "3.1006"
    # Medium is its own group: Medium original is best on the Pile although Small rows exist.
    assert t.cell_text("GPT-2 Medium original", "Pile") == "**2.5163**"


def test_best_and_gap_against_a_direct_computation():
    t = _table()
    for model, group, lf, means in PAPER:
        for d, v in means.items():
            best = min(mm[d] for _, g, _, mm in PAPER if g == group)
            c = t.cells[(model, d)]
            assert c.best == (v == best)
            assert (c.gap is None) == (not lf)
            if lf:
                assert c.gap == pytest.approx(v - best, abs=1e-12)


def test_markdown_layout():
    md = _table().to_markdown().splitlines()
    assert md[0] == "| Model | OWT | Pile | Pile-filtered |"
    assert md[1] == "|---|---|---|---|"
    assert md[4] == "| GPT-2 Small LN-free | 3.0797 [+0.0671] | 2.8852 [+0.0402] | 2.8757 [+0.0858] |"
    assert len(md) == 2 + len(PAPER)


def test_csv_round_trip_and_missing_cells():
    entries = [TableEntry("a", "d1", 3.0), TableEntry("b", "d1", 3.5, ln_free=True), TableEntry("b", "d2", 2.0, ln_free=True)]
    t = ce_table(entries)
    assert t.cell_text("a", "d2") == "-"
    assert t.cell_text("b", "d2") == "**2.0000** [+0.0000]"  # an LN-free model that is best has gap 0
    rows = list(csv.DictReader(io.StringIO(t.to_csv())))
    assert [r["model"] for r in rows] == ["a", "b"]
    assert float(rows[1]["d1"]) == 3.5 and rows[1]["d1_best"] == "0" and float(rows[1]["d1_gap"]) == 0.5
    assert rows[0]["d1_best"] == "1" and rows[0]["d1_gap"] == "" and rows[0]["d2"] == ""


def test_conflicting_entries_are_rejected():
    with pytest.raises(ValueError):
        ce_table([TableEntry("a", "d", 1.0), TableEntry("a", "d", 2.0)])
    with pytest.raises(ValueError):
        ce_table([TableEntry("a", "d", 1.0), TableEntry("a", "e", 2.0, ln_free=True)])
