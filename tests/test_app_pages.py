"""The app's pages render under streamlit.testing.v1.AppTest and show what they should."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest


import test_app_support as S  # tests/ is on sys.path (pytest rootdir conftest)
PAGES = ["pages/home.py", "pages/schedule.py", "pages/train.py", "pages/runs.py"]


@pytest.fixture
def root(tmp_path):
    return tmp_path / "runs"


@pytest.mark.parametrize("page", PAGES)
def test_page_renders_with_no_runs(root, page):
    at = S.open_page(S.new_app(root), page)
    assert at.title, f"{page} has no title"
    assert not at.error, [e.value for e in at.error]


@pytest.mark.parametrize("page", PAGES)
def test_page_renders_with_runs(root, page):
    S.write_fake_run(root, "a-lnfree")
    S.write_fake_run(root, "a-vanilla", mode="vanilla")
    S.write_fake_run(root, "broken", state="failed", steps=4, reason="loss became NaN at step 5")
    at = S.open_page(S.new_app(root), page)
    assert at.title


def test_sidebar_runs_root_is_shown_and_changeable(root, tmp_path):
    other = tmp_path / "elsewhere"
    S.write_fake_run(other, "only-here")
    at = S.new_app(root)
    del at.session_state["runs_root"]
    at.run()
    box = at.sidebar.text_input(key="runs_root")
    assert box.value == "runs"  # ./runs by default
    assert str(Path("runs").resolve()) in " ".join(c.value for c in at.sidebar.caption)
    box.set_value(str(other)).run()
    at.switch_page("pages/runs.py").run()
    assert not at.exception
    assert at.sidebar.text_input(key="runs_root").value == str(other)  # app.py runs around every page
    assert str(other) in " ".join(c.value for c in at.sidebar.caption)
    assert list(at.dataframe[0].value["name"]) == ["only-here"]


def test_a_page_opened_first_still_runs_inside_app_py(root):
    """A fresh server is in Streamlit's old pages-directory mode, which would run pages/train.py alone
    (no sidebar, no page list, no settings) when /train is the first URL opened; page_setup() ends it."""
    from streamlit.runtime.pages_manager import PagesManager

    at = S.new_app(root, fresh_server=True)
    at.run()
    at.switch_page("pages/train.py").run()  # AppTest starts each run like a fresh server
    assert not at.exception
    assert PagesManager.uses_pages_directory is False
    assert at.sidebar.text_input(key="runs_root").value == str(root)
    assert at.title[0].value == "Train"
    assert "pages/runs.py" in at.session_state["_lnfree_pages"]


def test_home_reports_offline_hub_and_missing_demo_suite(root):
    at = S.open_page(S.new_app(root), "pages/home.py")
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Hugging Face Hub"] == "not reachable"
    datasets = at.dataframe[1].value
    assert {"owt", "pile", "pile-filtered"} <= set(datasets["dataset"])
    models = at.dataframe[0].value
    assert "openai-community/gpt2" in set(models["model"])
    if importlib.util.find_spec("lnfree_core.cli.demo") is None:
        assert any("demo suite not available" in i.value.lower() for i in at.info)
    families = at.dataframe[2].value  # every supported family with its paper status
    assert {"GPT-2", "GPT-NeoX (Pythia)", "Qwen3"} <= set(families["family"])
    assert "appendix C" in " ".join(families["in the paper"])
    assert models.set_index("model").loc["EleutherAI/pythia-70m", "family"] == "GPT-NeoX (Pythia)"


# ---------------------------------------------------------------------------------------- Schedule page
def schedule_chart(at):
    (chart,) = [c for c in S.charts(at) if "removal events" in S.chart_title(c)]
    return chart


@pytest.mark.parametrize("name, expected", [("gpt2", 12 * 3 + 1), ("gpt2-medium", 24 * 3 + 1),
                                            ("gpt2-xl", 48 * 3 + 1)])
def test_schedule_chart_has_one_rule_per_removal_event(root, name, expected):
    at = S.open_page(S.new_app(root), "pages/schedule.py")
    at.selectbox(key="sched.preset").set_value(name).run()
    assert not at.exception
    chart = schedule_chart(at)
    (rules,) = S.layer_rows(chart, "rule")
    assert len(rules) == expected
    from lnfree_core.method.presets import preset

    assert sorted(rules["step"]) == sorted(e.step for e in preset(name).events())
    assert set(rules["group"]) == {"LN_MLP", "LN_qk", "LN_v", "LN_f"}
    spec = S.chart_spec(chart)
    rule_layer = [leaf for leaf in S.layers(spec) if leaf["mark"]["type"] == "rule"][0]
    assert rule_layer["encoding"]["color"]["field"] == "group"
    (lr,) = S.layer_rows(chart, "line")
    assert lr["step"].max() == preset(name).hparams.max_steps
    assert st_session(at)["designed_schedule"]["name"] == name


def st_session(at):
    return {k: at.session_state[k] for k in at.session_state}


def test_schedule_auto_fit_and_edits_move_the_rules(root):
    at = S.open_page(S.new_app(root), "pages/schedule.py")
    at.radio(key="sched.source").set_value("auto").run()
    at.number_input(key="sched.auto_layers").set_value(4).run()
    at.number_input(key="sched.auto_steps").set_value(100).run()
    (rules,) = S.layer_rows(schedule_chart(at), "rule")
    assert len(rules) == 4 * 3 + 1
    # edit: LN_f later
    at.number_input(key="sched.e.start.f").set_value(90).run()
    (rules,) = S.layer_rows(schedule_chart(at), "rule")
    assert rules[rules["group"] == "LN_f"]["step"].tolist() == [90]
    assert at.session_state["designed_schedule"]["starts"]["f"] == 90


def test_schedule_validation_error_inline(root):
    at = S.open_page(S.new_app(root), "pages/schedule.py")
    at.number_input(key="sched.e.start.qk").set_value(21).run()  # LN_MLP runs to step 42
    errors = [e.value for e in at.error]
    assert any("groups overlap" in e for e in errors), errors
    assert not at.download_button  # nothing to save while invalid
    at.number_input(key="sched.e.max_steps").set_value(100).run()
    assert any("groups overlap" in e for e in (e.value for e in at.error))
    at.number_input(key="sched.e.start.qk").set_value(44).run()
    errors = [e.value for e in at.error]
    assert any("max_steps" in e for e in errors), errors  # events now run past step 100


def test_schedule_download_and_upload_round_trip(root):
    at = S.open_page(S.new_app(root), "pages/schedule.py")
    at.selectbox(key="sched.preset").set_value("gpt2-large").run()
    at.number_input(key="sched.e.gap.v").set_value(5).run()
    at.text_input(key="sched.e.name").set_value("my-large").run()
    buttons = {b.label: b for b in at.download_button}
    assert set(buttons) == {"Download YAML", "Download JSON"}
    yaml_text = at.session_state["designed_schedule"]
    assert yaml_text["gaps"]["v"] == 5

    from lnfree_core.method.schedule import Schedule
    from pages._common.ui_data.schedule_view import schedule_to_text

    text = schedule_to_text(Schedule.from_dict(at.session_state["designed_schedule"]), "yaml")
    at2 = S.open_page(S.new_app(root), "pages/schedule.py")
    at2.radio(key="sched.source").set_value("file").run()
    at2.file_uploader[0].set_value(("my-large.yaml", text.encode(), "application/x-yaml")).run()
    assert not at2.exception
    assert at2.text_input(key="sched.e.name").value == "my-large"
    assert at2.number_input(key="sched.e.gap.v").value == 5
    (rules,) = S.layer_rows(schedule_chart(at2), "rule")
    assert len(rules) == 36 * 3 + 1


def test_schedule_upload_of_a_bad_file_shows_the_error(root):
    at = S.open_page(S.new_app(root), "pages/schedule.py")
    at.radio(key="sched.source").set_value("file").run()
    at.file_uploader[0].set_value(("bad.json", json.dumps({"n_layers": 2}).encode(), "application/json")).run()
    assert not at.exception
    assert any("starts" in e.value for e in at.error), [e.value for e in at.error]


def test_schedule_edits_survive_a_page_change(root):
    at = S.open_page(S.new_app(root), "pages/schedule.py")
    at.number_input(key="sched.e.gap.mlp").set_value(1).run()
    at.switch_page("pages/train.py").run()
    at.switch_page("pages/schedule.py").run()
    assert at.number_input(key="sched.e.gap.mlp").value == 1
    assert at.session_state["designed_schedule"]["gaps"]["mlp"] == 1


# ---------------------------------------------------------------------------------------- Train page
def test_train_page_uses_the_designed_schedule(root):
    at = S.open_page(S.new_app(root), "pages/schedule.py")
    at.selectbox(key="sched.preset").set_value("gpt2-medium").run()
    at.switch_page("pages/train.py").run()
    at.radio(key="train.sched_src").set_value("designed").run()
    assert not at.exception
    assert any("gpt2-medium: 24 layers" in c.value for c in at.caption), [c.value for c in at.caption]


def test_train_page_refuses_a_schedule_for_another_layer_count(root, tmp_path):
    from transformers import GPT2Config

    folder = tmp_path / "m"
    GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=100).save_pretrained(folder)
    (folder / "model.safetensors").write_bytes(b"")
    at = S.open_page(S.new_app(root), "pages/train.py")
    at.radio(key="train.model.kind").set_value("folder").run()
    at.text_input(key="train.model.folder").set_value(str(folder)).run()
    assert any("2 layers" in c.value for c in at.caption)
    assert at.radio(key="train.sched_src").value == "auto"  # the form adapts: no preset has 2 layers
    at.radio(key="train.sched_src").set_value("preset").run()
    at.selectbox(key="train.preset").set_value("gpt2").run()
    errors = [e.value for e in at.error]
    assert any("schedule is for 12 layers but the model has 2" in e for e in errors), errors
    assert at.button(key="train_launch").disabled
    at.radio(key="train.sched_src").set_value("auto").run()
    assert not at.error


def test_train_page_shows_a_pair_with_removal_rules_and_sigma(root):
    S.write_fake_run(root, "p-lnfree", steps=10)
    S.write_fake_run(root, "p-vanilla", steps=10, mode="vanilla")
    at = S.new_app(root)
    at.query_params["run"] = "p-lnfree"
    S.open_page(at, "pages/train.py")
    assert at.selectbox(key="train.watch").value == "p-lnfree"
    assert at.checkbox(key="train.overlay").value
    by_title = {S.chart_title(c): c for c in S.charts(at)}
    loss = by_title["main loss"]
    (lines,) = S.layer_rows(loss, "line")
    assert set(lines["run"]) == {"p-lnfree", "p-vanilla"}
    assert sorted(lines[lines["run"] == "p-vanilla"]["step"]) == list(range(1, 11))
    (rules,) = S.layer_rows(loss, "rule")
    assert sorted(rules["step"]) == [3, 5]
    sigma = [c for t, c in by_title.items() if t.startswith("sigma")][0]
    (sig,) = S.layer_rows(sigma, "line")
    assert set(sig["block"]) == {"mlp.0", "qk.0", "v.0", "f"}
    assert any("finished: step 10 of 10" in p.proto.text for p in at.get("progress"))
    # log scale on, and the overlay off
    at.toggle(key="train.log").set_value(True).run()
    at.checkbox(key="train.overlay").set_value(False).run()
    loss = {S.chart_title(c): c for c in S.charts(at)}["main loss"]
    assert S.chart_spec(loss)["layer"][1]["encoding"]["y"]["scale"]["type"] == "log"
    (lines,) = S.layer_rows(loss, "line")
    assert set(lines["run"]) == {"p-lnfree"}


def test_train_page_offers_resume_for_a_failed_run(root):
    S.write_fake_run(root, "broken", state="failed", steps=4, reason="loss became NaN at step 5")
    at = S.new_app(root)
    at.query_params["run"] = "broken"
    S.open_page(at, "pages/train.py")
    assert any("loss became NaN" in e.value for e in at.error)
    assert at.button(key="train_resume_broken")
    assert "last line of the log" in " ".join(c.value for c in at.code)


# ---------------------------------------------------------------------------------------- Runs page
def test_runs_page_lists_runs_with_status_progress_and_loss(root):
    S.write_fake_run(root, "done", steps=10, max_steps=10)
    S.write_fake_run(root, "half", state="cancelled", steps=5, max_steps=10, reason="cancelled by SIGTERM")
    at = S.open_page(S.new_app(root), "pages/runs.py")
    table = at.dataframe[0].value.set_index("name")
    assert table.loc["done", "state"] == "finished"
    assert table.loc["half", "state"] == "cancelled"
    assert table.loc["half", "progress"] == pytest.approx(0.5)
    assert table.loc["done", "loss"] == pytest.approx(5.0 - 0.1 * 10)
    at.multiselect(key="runs.selected").set_value(["done", "half"]).run()
    assert not at.exception
    assert at.session_state["selected_runs"] == ["done", "half"]
    links = [link.proto.page for link in at.get("page_link")]
    assert any(p.endswith("train") or "train" in p for p in links), links
    registered = at.session_state["_lnfree_pages"]
    for link in at.get("page_link"):
        assert any(link.proto.page.rstrip("/").split("/")[-1] in path.replace(".py", "") for path in registered) \
            or link.proto.page in ("", "/"), link.proto.page
    assert at.button(key="runs_resume_half")
    assert at.button(key="runs_delete_done")
    at.button(key="runs_delete_done").click().run()
    assert not (root / "done").exists()
    assert list(at.dataframe[0].value["name"]) == ["half"]


def test_runs_page_links_to_analysis_pages_only_when_registered(root, monkeypatch):
    S.write_fake_run(root, "x")
    at = S.open_page(S.new_app(root), "pages/runs.py")
    at.multiselect(key="runs.selected").set_value(["x"]).run()
    registered = at.session_state["_lnfree_pages"]
    analysis = [p for p, (sec, _) in registered.items() if sec == "Analyse"]
    labels = [link.proto.label for link in at.get("page_link")]
    assert len([lb for lb in labels if lb.endswith("(1)")]) == len(analysis)
    if not analysis:
        assert any("not installed yet" in c.value for c in at.caption)


def test_train_page_refuses_to_launch_over_an_existing_run(root, tmp_path):
    folder, data = S.write_train_inputs(tmp_path, n_layer=2)
    S.write_fake_run(root, "dup-vanilla", mode="vanilla")
    at = S.open_page(S.new_app(root), "pages/train.py")
    S.fill_train_form(at, "dup", folder, data)
    at.radio(key="train.sched_src").set_value("auto")
    at.radio(key="train.mode").set_value("pair").run()
    at.button(key="train_launch").click().run()
    assert not at.exception
    errors = [e.value for e in at.error]
    assert any("Not launched" in e and "'dup-vanilla' already exists" in e for e in errors), errors
    assert sorted(p.name for p in root.iterdir()) == ["dup-vanilla"]  # nothing half-launched
    at.text_input(key="train.name").set_value("bad name!").run()
    at.button(key="train_launch").click().run()
    assert any("contains" in e.value for e in at.error), [e.value for e in at.error]


def fake_demo_status(tmp_path):
    data = tmp_path / "demo" / "datasets" / "owt-demo"
    data.mkdir(parents=True)
    (data / "train.jsonl").write_text(json.dumps({"input_ids": list(range(64))}) + "\n")
    return {
        "root": str(tmp_path / "demo"), "exists": True, "built": True, "size": "tiny",
        "stages": {"datasets": {"finished": True, "seconds": 1.0}, "evaluate": {"finished": True, "seconds": 2.0}},
        "models": {"original": {"spec": "demo:original", "path": "/x/original", "built": True, "ln_free": False},
                   "ln-free": {"spec": "demo:ln-free", "path": "/x/ln-free", "built": True, "ln_free": True},
                   "vanilla": {"spec": "demo:vanilla", "path": "/x/vanilla", "built": False, "ln_free": None}},
        "datasets": {"owt-demo": {"path": str(data), "built": True},
                     "pile-demo": {"path": "/x/pile", "built": False}},
        "summary": {"ce": {"demo:original": {"owt-demo": 3.1}, "demo:ln-free": {"owt-demo": 3.2}},
                    "quality": {"statements": ["LN-free is within 0.1 nats of the original"]}},
        "build_command": "python -m lnfree_core demo build",
    }


def fake_catalog(status):
    """What ui_data.demo_catalog() gives for a suite in the state `status` describes."""
    return {"models": {n: m["spec"] for n, m in status["models"].items() if m["built"]},
            "datasets": {n: d["path"] for n, d in status["datasets"].items() if d["built"]}}


def test_home_shows_a_built_demo_suite(root, tmp_path, monkeypatch):
    from pages._common.ui_data import demo_suite as ui_data

    status = fake_demo_status(tmp_path)
    monkeypatch.setattr(ui_data, "demo_suite_state", lambda: {"available": True, "status": status, "error": None})
    monkeypatch.setattr(ui_data, "demo_catalog", lambda root=None: fake_catalog(status))
    at = S.open_page(S.new_app(root), "pages/home.py")
    assert any("Built (tiny)" in s.value for s in at.success)
    frames = [d.value for d in at.dataframe]
    models = frames[0]
    assert {"demo:original", "demo:ln-free"} <= set(models["model"]) and "demo:vanilla" not in set(models["model"])
    assert "owt-demo" in set(frames[1]["dataset"])
    demo_models = next(f for f in frames if "LN-free" in f.columns)
    assert demo_models.set_index("model").loc["demo:ln-free", "LN-free"] == "yes"
    ce = next(f for f in frames if "owt-demo" in f.columns)
    assert ce.set_index("model").loc["demo:ln-free", "owt-demo"] == 3.2
    assert any("within 0.1 nats" in m.value for m in at.markdown)
    assert at.button(key="home_demo_build").label.startswith("Rebuild")


def test_train_page_offers_built_demo_models_and_data(root, tmp_path, monkeypatch):
    from pages._common.ui_data import demo_suite as ui_data

    status = fake_demo_status(tmp_path)
    monkeypatch.setattr(ui_data, "demo_catalog", lambda root=None: fake_catalog(status))
    monkeypatch.setattr(ui_data, "demo_models_available", lambda: True)
    at = S.open_page(S.new_app(root), "pages/train.py")
    at.radio(key="train.model.kind").set_value("demo").run()
    assert at.selectbox(key="train.model.demo").options == ["demo:original", "demo:ln-free"]
    assert "owt-demo (demo suite)" in at.selectbox(key="train.data.name").options
    at.selectbox(key="train.data.name").set_value("owt-demo").run()
    assert not at.exception
    assert any("Offline demo-suite data" in c.value for c in at.caption)
    monkeypatch.setattr(ui_data, "demo_catalog", lambda root=None: {"models": {}, "datasets": {}})
    at.run()
    assert any("not built yet" in i.value for i in at.info)


def test_train_page_launches_on_several_gpus_with_torchrun(root, tmp_path, monkeypatch):
    import jobs

    from pages._common import env

    monkeypatch.setattr(env, "gpu_count", lambda: 2)
    launched = []
    monkeypatch.setattr(jobs, "start_run", lambda r, name, cfg, nproc=1, **kw: launched.append((name, cfg, nproc)))
    folder, data = S.write_train_inputs(tmp_path, n_layer=12)
    at = S.open_page(S.new_app(root), "pages/train.py")
    device = at.selectbox(key="train.device")
    assert device.options == ["CPU", "GPU 0 (cuda:0)", "GPU 1 (cuda:1)", "2 GPUs (torchrun, DDP)",
                              "2 GPUs (torchrun, FSDP: sharded weights)"]
    assert device.value == "GPU 0 (cuda:0)"  # a GPU by default when there is one
    S.fill_train_form(at, "big", folder, data)
    at.radio(key="train.mode").set_value("pair")
    at.selectbox(key="train.device").set_value("2 GPUs (torchrun, FSDP: sharded weights)")
    at.number_input(key="train.ov.max_steps").set_value(400).run()
    at.button(key="train_launch").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert [(n, c["mode"], c["device"], c["schedule"], c["overrides"], p) for n, c, p in launched] == [
        ("big-lnfree", "ln-free", "cuda", "gpt2", {"max_steps": 400}, 2),
        ("big-vanilla", "vanilla", "cuda", "gpt2", {"max_steps": 400}, 2),
    ]
    assert launched[0][1]["dataset"] == launched[1][1]["dataset"] == str(data.resolve())
    assert launched[0][1]["seed"] == launched[1][1]["seed"]
    assert launched[0][1]["distributed"] == launched[1][1]["distributed"] == "fsdp"
    assert any("Launched big-lnfree, big-vanilla" in s.value for s in at.success)
