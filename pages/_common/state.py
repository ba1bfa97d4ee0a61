"""App-wide state and navigation: page_setup (call first in every page), the runs root, widget values
that persist across pages, the registered pages and links to them, the Runs page's selection.
"""

from __future__ import annotations

import contextlib
import inspect
import threading
from pathlib import Path
from collections.abc import Callable
from typing import Any

import streamlit as st

import jobs
import lnfree_core.demo  # noqa: F401  (plug-in: registers the demo: names for pages run on their own)

try:  # Streamlit's pages/ directory mode, which page_setup ends (absent from a Streamlit without it)
    from streamlit.runtime.pages_manager import PagesManager
    from streamlit.runtime.scriptrunner import get_script_run_ctx
except ImportError:  # pragma: no cover
    PagesManager = get_script_run_ctx = None


DEFAULT_RUNS_ROOT = "runs"
PAGES_KEY = "_lnfree_pages"
WORKBENCH_SECTION, ANALYSIS_SECTION = "Workbench", "Analyse"  # app.py's sections


def _persist_kwargs() -> dict[str, str]:
    """Widget kwargs that keep a keyed widget's value across page changes (Streamlit >= 1.67's
    persist_state="session"); empty on older Streamlit, where values reset when the page changes."""
    try:
        ok = "persist_state" in inspect.signature(st.number_input).parameters
    except (TypeError, ValueError):
        ok = False
    return {"persist_state": "session"} if ok else {}


PERSIST = _persist_kwargs()


_RUN = threading.local()  # per script-runner thread: whether app.py is running the current page


@contextlib.contextmanager
def inside_app():
    """app.py runs the chosen page inside this: page_setup() then knows the page did not run alone."""
    _RUN.inside_app = True
    try:
        yield
    finally:
        _RUN.inside_app = False


def page_setup() -> None:
    """Call first in every page file: makes sure app.py (page list, sidebar, settings) runs around it.

    Streamlit has an old pages-directory mode: with a pages/ folder next to app.py it starts out
    running pages/*.py on their own when a browser's first request after the server started is a page
    URL (/train); app.py's st.navigation ends that mode, but only once app.py has run. So if this page
    runs without app.py around it, end that mode and rerun: the rerun goes through app.py to the same
    page. This is decided per run (not by Streamlit's process-wide flag alone): two sessions whose
    first runs started before either ended the mode both run alone, and both must rerun.
    A page file run as the main script itself (AppTest.from_file of a page) is left alone.
    """
    if getattr(_RUN, "inside_app", False):
        return
    if PagesManager is None:  # pragma: no cover - a Streamlit without the old mode
        return
    ctx = get_script_run_ctx()
    if ctx is None or Path(ctx.pages_manager.main_script_path).name != "app.py":
        return
    PagesManager.uses_pages_directory = False
    st.rerun()


def runs_root() -> Path:
    """The runs root chosen in the sidebar (absolute); ./runs by default."""
    value = st.session_state.get("runs_root") or DEFAULT_RUNS_ROOT
    return Path(str(value)).expanduser().resolve()


def runs_root_sidebar() -> Path:
    """The sidebar's runs-root input (called by app.py on every page)."""
    if "runs_root" not in st.session_state:
        st.session_state["runs_root"] = DEFAULT_RUNS_ROOT
    st.sidebar.text_input("Runs root", key="runs_root",
                          help="Folder that holds one sub-folder per training run (created on first launch).")
    root = runs_root()
    st.sidebar.caption(f"`{root}`" + ("" if root.exists() else " (does not exist yet)"))
    return root


def seed(key: str, value: Any) -> None:
    """Give a widget key its first value (only if it has none), before the widget is drawn."""
    if key not in st.session_state:
        st.session_state[key] = value


def register_pages(pages: dict[str, tuple[str, str]]) -> None:
    """app.py records the registered pages ({file path: (section, title)}) so pages link only to those."""
    st.session_state[PAGES_KEY] = dict(pages)


def page_registered(path: str) -> bool:
    return path in (st.session_state.get(PAGES_KEY) or {})


def registered_pages(section: str | None = None) -> dict[str, str]:
    """{file path: title} of the registered pages (of one section of app.py's PAGES if given)."""
    pages = st.session_state.get(PAGES_KEY) or {}
    return {p: title for p, (sec, title) in pages.items() if section is None or sec == section}


def page_link(path: str, label: str | None = None, icon: str | None = None,
              query_params: dict[str, Any] | None = None) -> bool:
    """st.page_link to `path` if app.py registered it; returns whether a link was drawn."""
    if not page_registered(path):
        return False
    st.page_link(path, label=label or st.session_state[PAGES_KEY][path][1], icon=icon, query_params=query_params)
    return True


def selected_runs() -> list[str]:
    """Run names picked on the Runs page (query parameter `runs` first, then session state)."""
    q = st.query_params.get_all("runs")
    if q:
        return [r for item in q for r in item.split(",") if r]
    return list(st.session_state.get("selected_runs") or [])


# CLI wording in lnfree_core's messages -> the widget that does the same on a page.
CLI_TO_WIDGET = {
    "(--endpoint / HF_ENDPOINT)": "(the \"Hub endpoint\" field under Hub connection, or HF_ENDPOINT)",
    "Pass allow_live=True (CLI: --allow-live)": "Tick \"Export even with live LayerNorms\" (under Model card and "
                                                "export options)",
    "pass allow_live=True (CLI: --allow-live)": "tick \"Export even with live LayerNorms\"",
    "Pass allow_live=True (CLI: --allow-live) if that is what you want": "Tick \"Export even with live "
                                                                       "LayerNorms\" if that is what you want",
    "or pass overwrite": "or tick \"Replace the export folder\"",
    "`--schedule auto`": "the \"auto\" schedule",
}


def for_page(message: str) -> str:
    """`message` (from lnfree_core, worded for the CLI) with CLI flags replaced by the page's widgets."""
    for cli, widget in sorted(CLI_TO_WIDGET.items(), key=lambda kv: -len(kv[0])):
        message = message.replace(cli, widget)
    return message


def show_error(e: BaseException, prefix: str = "") -> None:
    st.error(for_page(f"{prefix}{e}"), icon=":material/error:")


def run_action(action: Callable[[Any], Any], run_dir: Path) -> bool:
    """A jobs/ action on a run (jobs.cancel_run, resume_run, delete_run): its JobError is shown on the page,
    not raised. Returns whether it succeeded (the caller then usually reruns the page)."""
    try:
        action(run_dir)
    except jobs.JobError as e:
        show_error(e)
        return False
    return True
