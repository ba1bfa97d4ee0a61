"""Schedule, analysis and Home pages as a newcomer meets them (AppTest)."""

from __future__ import annotations

import test_app_support as S  # tests/ is on sys.path (pytest rootdir conftest)


def _x_domain(chart) -> list:
    spec = S.chart_spec(chart)
    for leaf in S.layers(spec):
        x = (leaf.get("encoding") or {}).get("x") or {}
        if "scale" in x:
            return x["scale"]["domain"]
    raise AssertionError("no x scale")


def test_a_schedule_that_cannot_run_is_not_left_to_train_silently(tmp_path):
    at = S.open_page(S.new_app(tmp_path), "pages/schedule.py")
    assert at.session_state["designed_schedule"]  # the preset, valid
    at.number_input(key="sched.e.max_steps").set_value(100).run()  # gpt2's LN_f comes at step ~100+
    at.number_input(key="sched.e.start.f").set_value(150).run()
    assert any("cannot run" in e.value for e in at.error)
    assert "designed_schedule" not in at.session_state
    (chart,) = [c for c in S.charts(at) if "removal events" in S.chart_title(c)]
    (rules,) = S.layer_rows(chart, "rule")
    lnf = rules[rules["group"] == "LN_f"]["step"].max()
    assert _x_domain(chart)[1] > lnf  # the LN_f rule is inside the chart
    at.switch_page("pages/train.py").run()
    at.radio(key="train.sched_src").set_value("designed").run()
    assert any("cannot run" in e.value for e in at.error)
    assert at.button(key="train_launch").disabled


def test_analysis_pages_point_to_the_demo_build_before_it_exists(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no ./lnfree_home/demo, no runs, Hub off
    for page in ("pages/dla.py", "pages/compare.py"):
        at = S.open_page(S.new_app(tmp_path / "runs"), page)
        shown = " ".join(i.value for i in at.info)
        assert "demo suite" in shown and "demo build" in shown, (page, shown)
        assert "local" in shown
