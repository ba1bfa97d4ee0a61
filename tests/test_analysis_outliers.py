"""High-loss samples (appendix E.1): ranking, first token above threshold, listings, comparison."""

from __future__ import annotations

import numpy as np
import pytest

from lnfree_core.analysis.outliers import (compare_token_losses, escape, first_exceeding, format_report,
                                           rank_sequences, sequences_exceeding, token_losses)

# A stand-in for the GPT-2 tokenizer on the ids of the paper's sample 1.
TEXT = {220: " ", 1367: "11", 198: "\n", 200: "\x0c", 42138: "notice", 290: " and", 1849: "\xa0"}


def decode(ids):
    return "".join(TEXT.get(i, f"<{i}>") for i in ids)


def _paper_sample():
    """Sample 1 of appendix E.1: nine spaces, '11', '\\n', then '\\x0c' with CE 54.27 at position 11."""
    toks = np.array([220] * 9 + [1367, 198, 200, 42138, 290])
    losses = np.array([7.6214733, 7.988017, 0.7575181, 0.21067815, 0.11241462, 0.0828728, 0.07294927,
                       0.06983218, 9.5656, 3.8515434, 54.273285, 11.611183, 5.8352313], dtype=np.float32)
    return toks, losses


def test_first_exceeding_reproduces_the_paper_sample():
    toks, losses = _paper_sample()
    ex = first_exceeding(toks, losses, decode)
    assert ex.position == 11 and ex.token_id == 200
    assert ex.loss == pytest.approx(54.273285)
    assert ex.context_ids == [220, 220, 220, 1367, 198]
    assert ex.escaped == "\\x0c" and ex.context_escaped == "   11\\n"
    assert first_exceeding(toks, losses, decode, threshold=60) is None
    assert first_exceeding(toks, losses, decode, threshold=54.273285) is None  # strictly greater
    assert first_exceeding(toks, losses, decode, threshold=9.0).position == 9
    assert first_exceeding(toks, losses, decode, threshold=7.0, context=5).context_ids == [220]  # clipped at 0


def test_report_text():
    toks, losses = _paper_sample()
    rep = format_report(2726, 10000, toks, losses, decode).splitlines()
    assert rep[0] == "Sample 2726 out of 10000 has tokens with CE loss > 50."
    assert rep[1] == "First token with CE loss > 50:200 at position 11."
    assert rep[3] == "Decoded (unicode_escape):'\\x0c'"
    assert rep[4] == "Sequence of last 5 Tokens for prediction:220 220 220 1367 198"
    assert rep[-1].startswith("220:N/A, 220:7.6214733, 220:7.988017,")
    assert "200:54.273285" in rep[-1]


def test_escape():
    assert escape("\t") == "\\t" and escape("\xa0\xa0") == "\\xa0\\xa0" and escape("ab c") == "ab c"
    assert escape("\r\n") == "\\r\\n"


def test_token_losses_alignment():
    toks, losses = _paper_sample()
    rows = token_losses(toks, losses, decode)
    assert len(rows) == len(toks) and rows[0].loss is None
    for r in rows[1:]:
        assert r.loss == pytest.approx(float(losses[r.position - 1]))
        assert r.token_id == toks[r.position]
    assert rows[11].escaped == "\\x0c" and rows[10].text == "\n"
    with pytest.raises(ValueError):
        token_losses(toks, losses[:-1], decode)


def test_ranking_against_sorting():
    rng = np.random.default_rng(1)
    losses = rng.exponential(2.0, size=(30, 20))
    losses[17, 3] = 400.0  # the highest max, but one spike
    losses[5] += 30.0  # the highest mean (the spike adds only 400 / 20 to its row mean)
    by_mean = rank_sequences(losses, "mean")
    by_max = rank_sequences(losses, "max", k=4)
    assert [r.index for r in by_mean] == list(np.argsort(-losses.mean(1), kind="stable"))
    assert by_mean[0].index == 5 and by_max[0].index == 17 and len(by_max) == 4
    assert by_max[0].argmax_position == 4 and by_max[0].score == 400.0
    assert by_mean[0].mean == pytest.approx(losses[5].mean()) and by_mean[0].max == pytest.approx(losses[5].max())
    assert list(sequences_exceeding(losses, 50.0)) == [17]
    with pytest.raises(ValueError):
        rank_sequences(losses, "median")


def test_compare_two_models():
    toks, la = _paper_sample()
    lb = la * 0.5
    rows = compare_token_losses(toks, la, lb, decode)
    assert rows[0].diff is None and rows[0].loss_a is None
    for r in rows[1:]:
        assert r.diff == pytest.approx(float(lb[r.position - 1] - la[r.position - 1]))
