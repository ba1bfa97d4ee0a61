"""Shared helpers for the app tests (tests/test_app_*.py): AppTest set-up, chart decoding, fake runs.

Holds no tests itself; the app tests load it by path (load_support), whatever pytest's import mode.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pandas as pd
import yaml

REPO = Path(__file__).resolve().parent.parent
APP = REPO / "app.py"


def new_app(root: Path, timeout: float = 30, fresh_server: bool = False):
    """An AppTest of app.py with the runs root set to `root` (offline: no Hub probe).

    AppTest starts every run like a freshly started server, in Streamlit's old pages-directory mode
    (app.py's page_setup() leaves it with a rerun, which would eat a click or a typed value sent
    with that run). A real server leaves that mode for good once app.py has run, so by default
    the runs here do too; `fresh_server=True` keeps AppTest's behaviour.
    """
    os.environ["HF_HUB_OFFLINE"] = "1"
    from streamlit.runtime.pages_manager import PagesManager
    from streamlit.testing.v1 import AppTest
    from streamlit.testing.v1 import app_test as app_test_module

    class ServerPagesManager(PagesManager):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            PagesManager.uses_pages_directory = False  # app.py's st.navigation has run before

    class ServerAppTest(AppTest):
        def _run(self, *args, **kwargs):
            saved = app_test_module.PagesManager
            app_test_module.PagesManager = ServerPagesManager
            try:
                return super()._run(*args, **kwargs)
            finally:
                app_test_module.PagesManager = saved

    at = (AppTest if fresh_server else ServerAppTest)(str(APP), default_timeout=timeout)
    at.session_state["runs_root"] = str(root)
    return at


def open_page(at, page: str):
    """Run the app once (st.navigation registers pages), then switch to `page` and run it."""
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    at.switch_page(page).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def fill_train_form(at, name: str, model_folder, data_path) -> None:
    """On the Train page: the run name, a local model folder and a local data file (the start of every launch)."""
    at.text_input(key="train.name").set_value(name)
    at.radio(key="train.model.kind").set_value("folder").run()
    at.text_input(key="train.model.folder").set_value(str(model_folder))
    at.selectbox(key="train.data.name").set_value("local").run()
    at.text_input(key="train.data.path").set_value(str(data_path))


def write_train_inputs(tmp_path: Path, n_layer: int) -> tuple[Path, Path]:
    """(a GPT-2 model folder with a config of n_layer layers and empty weights, a jsonl of one token row) for
    Train page tests that never start the trainer."""
    from transformers import GPT2Config

    folder = tmp_path / "m"
    GPT2Config(n_layer=n_layer, n_embd=32, n_head=2, vocab_size=100).save_pretrained(folder)
    (folder / "model.safetensors").write_bytes(b"")
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"input_ids": list(range(64))}) + "\n")
    return folder, data


def charts(at) -> list:
    """The Vega-Lite chart elements (st.altair_chart) on the page, in order."""
    return list(at.get("arrow_vega_lite_chart")) + [n for n in _walk(at.main) if n.type == "vega_lite_chart"]


def _walk(node):
    for child in getattr(node, "children", {}).values():
        yield child
        yield from _walk(child)


def chart_spec(element) -> dict:
    return json.loads(element.proto.spec)


def chart_datasets(element) -> dict[str, pd.DataFrame]:
    """{dataset name: rows} of a chart element (Streamlit ships Altair data as named Arrow datasets)."""
    from streamlit.dataframe_util import convert_arrow_bytes_to_pandas_df

    return {d.name: convert_arrow_bytes_to_pandas_df(d.data.data) for d in element.proto.datasets}


def layers(spec: dict) -> list[dict]:
    """Every leaf view of a (possibly nested) layered spec."""
    if "layer" in spec:
        return [leaf for child in spec["layer"] for leaf in layers(child)]
    return [spec]


def layer_rows(element, mark: str) -> list[pd.DataFrame]:
    """The data rows of each layer whose mark type is `mark` (e.g. 'rule', 'line')."""
    spec = chart_spec(element)
    data = chart_datasets(element)
    out = []
    for leaf in layers(spec):
        m = leaf.get("mark")
        mtype = m.get("type") if isinstance(m, dict) else m
        if mtype != mark:
            continue
        name = (leaf.get("data") or spec.get("data") or {}).get("name")
        out.append(data[name])
    return out


def chart_title(element) -> str:
    t = chart_spec(element).get("title")
    return t.get("text") if isinstance(t, dict) else (t or "")


def write_fake_run(root: Path, name: str, *, state: str = "finished", steps: int = 10, max_steps: int = 10,
                   mode: str = "ln-free", removals: tuple = ((3, "mlp", 0), (5, "f", None)),
                   reason: str | None = None) -> Path:
    """A run directory as the trainer leaves it (docs/CONTRACTS.md), without running anything."""
    rd = root / name
    rd.mkdir(parents=True)
    (rd / "request.yaml").write_text(yaml.safe_dump({"model": "/models/tiny", "dataset": "/data/tiny.jsonl",
                                                      "mode": mode, "out": str(rd), "schedule": "auto"}))
    t0 = time.time() - 100
    with open(rd / "metrics.jsonl", "w") as f:
        for s in range(1, steps + 1):
            for ev_step, block, layer in removals:
                if ev_step == s - 1 and mode == "ln-free":
                    f.write(json.dumps({"type": "event", "kind": "removal", "step": ev_step, "block": block,
                                        "layer": layer, "sigma": 0.5, "time": t0 + s}) + "\n")
            sigma = {"mlp.0": 0.5, "qk.0": 0.4, "v.0": 0.4, "f": 0.9} if mode == "ln-free" else None
            f.write(json.dumps({"type": "step", "step": s, "loss": 5.0 - 0.1 * s,
                                "aux_loss": 0.01 if mode == "ln-free" else None, "lr": 1e-4, "grad_norm": 1.0,
                                "tokens_per_s": 500.0, "tokens": 64 * s, "sigma": sigma, "time": t0 + s}) + "\n")
    (rd / "status.json").write_text(json.dumps({
        "state": state, "step": steps, "max_steps": max_steps, "pid": 2 ** 22 + 12345, "reason": reason,
        "updated": t0 + steps + 1, "started": t0,
    }))
    (rd / "train.log").write_text("loading\nstep 1\nlast line of the log\n")
    return rd
