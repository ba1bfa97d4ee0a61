"""Publish page state after a push (AppTest): a failed push keeps the token and shows its reason in the
open, the next keystroke is never eaten, and messages name the page's widgets, not CLI flags."""

from __future__ import annotations

import json
from pathlib import Path

from fake_hub import TOKEN, FakeHub, hub_env, make_export_dir  # noqa: F401
from streamlit.testing.v1 import AppTest
from streamlit.testing.v1.element_tree import Expander, Status

PAGE = str(Path(__file__).resolve().parents[1] / "pages" / "publish.py")


def _page_with_export(tmp_path: Path, endpoint: str) -> AppTest:
    run = tmp_path / "runs" / "r"
    (run / "checkpoints").mkdir(parents=True)
    (run / "status.json").write_text(json.dumps({"state": "finished"}))
    out = make_export_dir(tmp_path / "exp")
    at = AppTest.from_file(PAGE, default_timeout=60)
    at.session_state["runs_root"] = str(tmp_path / "runs")
    at.run()
    at.text_input(key="publish.out.r").input(str(out))
    at.text_input(key="publish.repo_id").input("alice/r")
    at.text_input(key="publish.endpoint").input(endpoint)
    return at


def _in_collapsed_block(at: AppTest, element) -> bool:
    """Whether `element` sits in an expander/status block that is collapsed."""
    def walk(node, collapsed):
        for child in getattr(node, "children", {}).values():
            here = collapsed
            if isinstance(child, (Expander, Status)):
                here = collapsed or not child.proto.expanded
            if child is element:
                return here
            found = walk(child, here)
            if found is not None:
                return found
        return None
    return bool(walk(at.main, False))


def test_failed_push_keeps_the_token_and_the_next_keystroke(hub_env, tmp_path):
    with FakeHub(token=TOKEN, fail={"commit": 403}) as hub:
        at = _page_with_export(tmp_path, hub.endpoint)
        at.text_input(key="publish.token").input(TOKEN).run()
        at.button(key="publish.push_btn").click().run()
        assert not at.exception and "write access" in at.error[0].value
        assert not _in_collapsed_block(at, at.error[0]), "the push error is hidden in a collapsed box"
        assert at.text_input(key="publish.token").value == TOKEN  # kept for a retry
        at.text_input(key="publish.token").input("h").run()  # the user starts typing another token
        assert at.text_input(key="publish.token").value == "h"  # the first character is not lost
        at.text_input(key="publish.token").input(TOKEN).run()
        at.button(key="publish.push_btn").click().run()
        assert "no Hugging Face token" not in " ".join(e.value for e in at.error)


def test_successful_push_empties_the_token_at_once(hub_env, tmp_path):
    with FakeHub(token=TOKEN) as hub:
        at = _page_with_export(tmp_path, hub.endpoint)
        at.text_input(key="publish.token").input(TOKEN).run()
        at.button(key="publish.push_btn").click().run()
        assert not at.exception and "Published" in at.success[0].value
        assert at.text_input(key="publish.token").value == ""
        at.text_input(key="publish.token").input("h").run()
        assert at.text_input(key="publish.token").value == "h"


def test_messages_name_widgets_not_cli_flags():
    from pages._common.state import for_page

    msg = for_page("Check the network, proxy settings and the endpoint (--endpoint / HF_ENDPOINT).")
    assert "--endpoint" not in msg and "Hub endpoint" in msg
    msg = for_page("exporting it publishes an ordinary GPT-2. Pass allow_live=True (CLI: --allow-live) to export it "
                   "anyway.")
    assert "--allow-live" not in msg and "Export even with live LayerNorms" in msg
    assert "--schedule" not in for_page("Use a preset for that size, or `--schedule auto` to fit the paper's proportions.")
