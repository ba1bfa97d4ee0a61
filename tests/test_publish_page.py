"""The Publish page (AppTest): renders with no runs and with a finished run; exports a real tiny run,
shows its model card, pushes it to the fake Hub, and never shows the token."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fake_hub import TOKEN, FakeHub, hub_env, make_export_dir, tiny_finished_run  # noqa: F401
from streamlit.testing.v1 import AppTest

CE_TABLE = "| Model | OpenWebText |\n|---|---|\n| tiny-ln-free | **4.8123** |\n"

PAGE = str(Path(__file__).resolve().parents[1] / "pages" / "publish.py")


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    return tiny_finished_run(tmp_path_factory)


def _page(runs_root: Path) -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=60)
    at.session_state["runs_root"] = str(runs_root)
    return at.run()


def _shown_text(at: AppTest) -> str:
    """Everything the page shows as text (messages, markdown, code, captions, widget values)."""
    parts = [repr(at.main)]
    for kind in ("markdown", "caption", "success", "error", "info", "warning", "code", "title", "subheader",
                 "exception", "text"):
        parts += [str(getattr(e, "value", "")) for e in getattr(at, kind)]
    parts += [str(w.value) for w in at.text_input if w.key != "publish.token"]
    return "\n".join(parts)


def test_renders_with_an_empty_runs_root(tmp_path):
    at = _page(tmp_path / "runs")
    assert not at.exception
    assert "No finished runs" in at.info[0].value and str(tmp_path / "runs") in at.info[0].value
    assert len(at.button) == 0


def test_works_as_an_st_page(tmp_path):
    script = (f"import streamlit as st\nst.session_state['runs_root'] = {str(tmp_path)!r}\n"
              f"st.navigation([st.Page({PAGE!r}, title='Publish')]).run()\n")
    at = AppTest.from_string(script, default_timeout=60).run()
    assert not at.exception and at.title[0].value == "Publish to the Hugging Face Hub"


def test_renders_with_one_finished_run(tmp_path):
    run = tmp_path / "runs" / "my-run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "status.json").write_text(json.dumps({"state": "finished", "step": 10, "max_steps": 10}))
    (tmp_path / "runs" / "crashed" / "checkpoints").mkdir(parents=True)
    (tmp_path / "runs" / "crashed" / "status.json").write_text(json.dumps({"state": "failed"}))
    at = _page(tmp_path / "runs")
    assert not at.exception
    assert at.selectbox(key="publish.run").options == ["my-run"]
    assert at.text_input(key="publish.token").proto.type == at.text_input(key="publish.token").proto.PASSWORD
    assert at.button(key="publish.export_btn").disabled and at.button(key="publish.push_btn").disabled
    at.text_input(key="publish.repo_id").input("not a repo id").run()
    assert not at.exception and "USER/NAME" in " ".join(c.value for c in at.caption)
    at.text_input(key="publish.repo_id").input("alice/my-run").run()
    assert not at.button(key="publish.export_btn").disabled
    assert at.button(key="publish.push_btn").disabled  # nothing exported yet
    assert "holds no export yet" in " ".join(i.value for i in at.info)


def test_export_preview_and_push_without_showing_the_token(hub_env, finished_run, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # lnfree's tokenizer: the bundled GPT-2 files
    out = tmp_path / "exports" / "tiny"
    with FakeHub(token=TOKEN) as hub:
        at = _page(finished_run.parent)
        at.text_input(key="publish.out.tiny").input(str(out))
        at.text_input(key="publish.repo_id").input("alice/from-page")
        at.text_area(key="publish.ce_md").input(CE_TABLE)
        at.text_input(key="publish.endpoint").input(hub.endpoint)
        at.text_input(key="publish.token").input(TOKEN).run()
        at.button(key="publish.export_btn").click().run()
        assert not at.exception and not at.error
        card = (out / "README.md").read_text()
        assert 'from_pretrained("alice/from-page")' in card and CE_TABLE.strip() in card
        shown = " ".join(m.value for m in at.markdown)
        assert "# alice/from-page" in shown and "Evaluation (mean cross-entropy)" in shown  # the card preview
        assert not at.button(key="publish.push_btn").disabled and not at.warning
        at.button(key="publish.push_btn").click().run()
        assert not at.exception and not at.error, [e.value for e in at.error]
        assert "Published privately" in at.success[0].value and f"{hub.endpoint}/alice/from-page" in at.success[0].value
        assert TOKEN not in _shown_text(at)
        at.run()  # the next rerun forgets the typed token
        assert at.text_input(key="publish.token").value == ""
    repo = hub.repos["alice/from-page"]
    assert repo.private and repo.files["model.safetensors"] == (out / "model.safetensors").read_bytes()
    assert all(r.authorized for r in hub.requests)


@pytest.mark.parametrize("fail,words", [({"commit": 403}, "write access"), ({"create": 401}, "rejected the token")])
def test_failed_push_shows_the_reason(hub_env, tmp_path, fail, words):
    run = tmp_path / "runs" / "r"
    (run / "checkpoints").mkdir(parents=True)
    (run / "status.json").write_text(json.dumps({"state": "finished"}))
    out = make_export_dir(tmp_path / "exp")
    with FakeHub(token=TOKEN, fail=fail, echo_auth_in_errors=True) as hub:
        at = _page(tmp_path / "runs")
        at.text_input(key="publish.out.r").input(str(out))
        at.text_input(key="publish.repo_id").input("alice/r")
        at.text_input(key="publish.endpoint").input(hub.endpoint)
        at.text_input(key="publish.token").input(TOKEN)
        at.run()
        assert at.warning  # this folder is not an lnfree export of the run: the page says so
        at.button(key="publish.push_btn").click().run()
    assert not at.exception and words in at.error[0].value
    assert TOKEN not in _shown_text(at)
