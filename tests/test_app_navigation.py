"""Every page, opened first on a fresh server (a deep link such as /dla), runs inside app.py: lnfree's
navigation and the sidebar's runs-root field, not Streamlit's automatic list of pages/ files."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import test_app_support as S  # tests/ is on sys.path (pytest rootdir conftest)

REPO = Path(__file__).resolve().parent.parent


def registered_pages() -> list[str]:
    tree = ast.parse((REPO / "app.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.AnnAssign) and getattr(node.target, "id", None) == "PAGES":
            return [elt.elts[1].value for elt in node.value.elts if (REPO / elt.elts[1].value).is_file()]
    raise AssertionError("app.py has no PAGES list")


def _first_statement_calls_page_setup(path: Path) -> bool:
    """page_setup() must come before anything that draws: the first statement after the imports."""
    body = [n for n in ast.parse(path.read_text()).body
            if not isinstance(n, (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.ClassDef))
            and not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant))  # docstring
            and not isinstance(n, (ast.Assign, ast.AnnAssign))]  # constants
    if not body:
        return False
    first = body[0]
    return (isinstance(first, ast.Expr) and isinstance(first.value, ast.Call)
            and ast.unparse(first.value.func) == "page_setup")


@pytest.mark.parametrize("page", registered_pages())
def test_every_page_calls_page_setup_first(page):
    assert _first_statement_calls_page_setup(REPO / page), (
        f"{page} must call page_setup() before drawing anything: without it, a deep link to this page "
        "opened first on a fresh server runs the file alone (Streamlit's pages/ directory mode)")


@pytest.mark.parametrize("page", ["pages/dla.py", "pages/compare.py", "pages/publish.py"])
def test_deep_link_opened_first_runs_inside_app_py(tmp_path, page):
    from streamlit.runtime.pages_manager import PagesManager

    at = S.new_app(tmp_path, fresh_server=True)
    at.run()
    at.switch_page(page).run()  # AppTest starts each run like a fresh server
    assert not at.exception, [e.value for e in at.exception]
    assert PagesManager.uses_pages_directory is False
    assert at.sidebar.text_input(key="runs_root").value == str(tmp_path)
    assert "pages/runs.py" in at.session_state["_lnfree_pages"]
