"""lnfree's Streamlit app: `streamlit run app.py`.

Pages are listed in PAGES (section, file, title, icon); a page whose file does not exist in this
install is left out, so analysis pages appear as soon as their files are added.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import streamlit as st  # noqa: E402

import lnfree_core.demo  # noqa: E402,F401  (plug-in: registers the demo: model and dataset names)
from pages._common.state import (  # noqa: E402
    ANALYSIS_SECTION, WORKBENCH_SECTION, inside_app, register_pages, runs_root_sidebar,
)

# (section, page file relative to this file, title, icon)
PAGES: list[tuple[str, str, str, str]] = [
    (WORKBENCH_SECTION, "pages/home.py", "Home", ":material/home:"),
    (WORKBENCH_SECTION, "pages/schedule.py", "Schedule", ":material/timeline:"),
    (WORKBENCH_SECTION, "pages/train.py", "Train", ":material/model_training:"),
    (WORKBENCH_SECTION, "pages/runs.py", "Runs", ":material/folder_open:"),
    (ANALYSIS_SECTION, "pages/compare.py", "Compare", ":material/compare_arrows:"),
    (ANALYSIS_SECTION, "pages/outliers.py", "Outliers", ":material/scatter_plot:"),
    (ANALYSIS_SECTION, "pages/first_tokens.py", "First tokens", ":material/first_page:"),
    (ANALYSIS_SECTION, "pages/confidence.py", "Confidence neurons", ":material/neurology:"),
    (ANALYSIS_SECTION, "pages/dla.py", "DLA", ":material/stacked_bar_chart:"),
    (ANALYSIS_SECTION, "pages/ioi_patching.py", "IOI patching", ":material/swap_horiz:"),
    (ANALYSIS_SECTION, "pages/overconfidence.py", "Overconfidence", ":material/speed:"),
    (ANALYSIS_SECTION, "pages/benchmarks.py", "Benchmarks", ":material/fact_check:"),
    (ANALYSIS_SECTION, "pages/publish.py", "Publish", ":material/publish:"),
]


def build_navigation() -> dict[str, list]:
    sections: dict[str, list] = {}
    registered = {}
    for section, path, title, icon in PAGES:
        if not (HERE / path).is_file():
            continue
        page = st.Page(path, title=title, icon=icon, default=not registered)
        registered[path] = (section, title)
        sections.setdefault(section, []).append(page)
    register_pages(registered)
    return sections


st.set_page_config(page_title="lnfree", page_icon=":material/science:", layout="wide")
runs_root_sidebar()
nav = st.navigation(build_navigation())
with inside_app():  # pages' page_setup() sees they run inside app.py
    nav.run()
