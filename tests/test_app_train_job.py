"""End to end through the Train page: launch a tiny LN-removal / vanilla pair on CPU with the real
trainer, wait for both runs to finish, and check the live view charts every step and removal."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

pytest.importorskip("transformers")


import test_app_support as S  # tests/ is on sys.path (pytest rootdir conftest)
MAX_STEPS = 10


@pytest.fixture
def tiny(tiny_model_dir, tiny_dataset):
    """The shared tiny GPT-2 folder and jsonl of token ids (tests/conftest.py)."""
    return tiny_model_dir, tiny_dataset


def wait_finished(root: Path, names: list[str], timeout: float = 150.0) -> None:
    import jobs

    deadline = time.monotonic() + timeout
    while True:
        sts = [jobs.run_status(root / n) for n in names]
        if all(not s.active for s in sts):
            break
        if time.monotonic() > deadline:
            for n in names:
                jobs.cancel_run(root / n) if jobs.run_status(root / n).alive else None
            pytest.fail(f"runs did not finish in {timeout} s: {[(s.name, s.state, s.step) for s in sts]}")
        time.sleep(0.5)
    for s in sts:
        log = (root / s.name / "train.log").read_text() if (root / s.name / "train.log").exists() else ""
        assert s.state == "finished", f"{s.name}: {s.state} ({s.reason})\n{log[-3000:]}"


def test_launch_a_tiny_pair_from_the_train_page_and_watch_it(tmp_path, tiny):
    model, data = tiny
    root = tmp_path / "runs"
    at = S.open_page(S.new_app(root, timeout=60), "pages/train.py")
    S.fill_train_form(at, "tiny", model, data)
    at.radio(key="train.sched_src").set_value("auto")
    at.radio(key="train.mode").set_value("pair")
    at.selectbox(key="train.device").set_value("CPU")
    for key, value in (("max_steps", MAX_STEPS), ("micro_batch_size", 2), ("grad_accum_steps", 1), ("seq_len", 32)):
        at.number_input(key=f"train.ov.{key}").set_value(value)
    at.run()
    assert not at.error, [e.value for e in at.error]
    assert not at.button(key="train_launch").disabled
    at.button(key="train_launch").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    names = ["tiny-lnfree", "tiny-vanilla"]
    assert sorted(p.name for p in root.iterdir()) == names
    assert at.selectbox(key="train.watch").value == "tiny-lnfree"

    wait_finished(root, names)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    texts = [p.proto.text for p in at.get("progress")]
    assert any(f"tiny-lnfree**: finished: step {MAX_STEPS} of {MAX_STEPS}" in t for t in texts), texts
    assert any(f"tiny-vanilla**: finished: step {MAX_STEPS} of {MAX_STEPS}" in t for t in texts), texts

    by_title = {S.chart_title(c): c for c in S.charts(at)}
    assert {"main loss", "aux loss", "learning rate", "gradient norm", "tokens / s"} <= set(by_title)
    (lines,) = S.layer_rows(by_title["main loss"], "line")
    for n in names:  # every step of both runs, on the same axes
        assert sorted(lines[lines["run"] == n]["step"]) == list(range(1, MAX_STEPS + 1))
    from lnfree_core.method.schedule import fit_schedule

    expected = sorted(e.step for e in fit_schedule(2, MAX_STEPS).events())
    (rules,) = S.layer_rows(by_title["main loss"], "rule")
    assert sorted(rules["step"]) == expected  # one rule per removal event that happened
    (aux,) = S.layer_rows(by_title["aux loss"], "line")
    assert set(aux["run"]) == {"tiny-lnfree"}  # the vanilla control has no aux loss
    sigma = next(c for t, c in by_title.items() if t.startswith("sigma"))
    (sig,) = S.layer_rows(sigma, "line")
    assert set(sig["block"]) == {"mlp.0", "mlp.1", "qk.0", "qk.1", "v.0", "v.1", "f"}
    assert at.metric[3].value == str(len(expected))  # LN blocks removed
