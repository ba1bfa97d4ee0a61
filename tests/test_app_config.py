"""The app's .streamlit/config.toml: what a user's `streamlit run app.py` gets."""

from __future__ import annotations

import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_server_watches_no_files_and_blacklists_environments_runs_and_caches():
    """An idle server watching ./.venv, runs and caches burnt a core (97%); with no watcher, 0.5%."""
    from streamlit import file_util

    server = tomllib.loads((REPO / ".streamlit" / "config.toml").read_text())["server"]
    assert server["fileWatcherType"] == "none"
    assert server["runOnSave"] is False
    assert server["address"] == "127.0.0.1"
    black = server["folderWatchBlacklist"]
    for path in ("/home/u/lnfree/.venv/lib/python3.11/site-packages/torch/__init__.py",
                 "/opt/conda/lib/python3.11/site-packages/transformers/x.py",
                 "/home/u/lnfree/runs/my-run/metrics.jsonl", "/home/u/lnfree/lnfree_cache/ce/a/key.json",
                 "/home/u/lnfree/lnfree_home/demo/models/original/config.json"):
        assert any(file_util.file_is_in_folder_glob(path, g) for g in black), path
    for path in ("/home/u/lnfree/pages/compare.py", "/home/u/lnfree/lnfree_core/data/sources.py"):
        assert not any(file_util.file_is_in_folder_glob(path, g) for g in black), path
