"""Work that runs in a worker thread while the page stays responsive; its Future lives in session state.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import streamlit as st


_executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="lnfree-ui")


def run_in_background(key: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Future:
    """Run `fn` in a worker thread (the page stays responsive); its Future is kept in session state."""
    fut = _executor.submit(fn, *args, **kwargs)
    st.session_state[f"_bg.{key}"] = fut
    return fut


def background_future(key: str) -> Future | None:
    return st.session_state.get(f"_bg.{key}")


def clear_background(key: str) -> None:
    st.session_state.pop(f"_bg.{key}", None)
