"""`demo_status`: what of the demo suite is built, where, and its summary numbers (for the CLI and the app).

Reads only small JSON files (stage markers, ``summary.json``) and checks that paths exist: it loads
no model and imports no torch, so the app can call it on every page render.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .paths import (BUILD_HINT, DATASET_NAMES, MODEL_NAMES, demo_dataset_path, demo_model_path, demo_root,
                    demo_run_path, stage_marker_path, summary_path)
from .stages import STAGES


def _read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _stage_state(root: Path, name: str, want_key: str | None) -> dict:
    rec = _read_json(stage_marker_path(name, root))
    if rec is None:
        return {"finished": False}
    outputs_ok = all(Path(p).exists() for p in rec.get("outputs", []))
    current = want_key is None or rec.get("key") == want_key
    return {"finished": outputs_ok and current, "seconds": rec.get("seconds"), "key": rec.get("key"),
            "outputs_present": outputs_ok, "matches_summary": current}


def demo_status(root: str | os.PathLike | None = None) -> dict:
    """The demo suite under ``root`` (default ``./lnfree_home/demo``), as a JSON-ready dict.

    ``built`` is True when ``summary.json`` exists and every stage it lists is finished with the
    same key and its outputs present. ``models`` maps each name to its ``demo:NAME`` spec, folder,
    run directory and whether it is there; ``datasets`` likewise; ``summary`` carries the headline
    numbers (CE table, unigram entropy, quality statements) when built.
    """
    root = demo_root(root)
    summary = _read_json(summary_path(root))
    keys = (summary or {}).get("stage_keys") or {}
    stages = {name: _stage_state(root, name, keys.get(name)) for name in STAGES}
    built = summary is not None and all(s["finished"] for s in stages.values())
    models = {}
    for name in MODEL_NAMES:
        path = demo_model_path(name, root, must_exist=False)
        models[name] = {"spec": f"demo:{name}", "path": str(path), "run_dir": str(demo_run_path(name, root)),
                        "built": (path / "config.json").is_file(),
                        "ln_free": ((summary or {}).get("models", {}).get(name) or {}).get("ln_free")}
    datasets = {}
    for name in DATASET_NAMES:
        path = demo_dataset_path(name, root)
        info = ((summary or {}).get("datasets") or {}).get(name) or {}
        datasets[name] = {"path": str(path), "built": (path / "train.parquet").is_file(),
                          **{k: v for k, v in info.items() if k != "path"}}
    out = {
        "root": str(root),
        "exists": root.is_dir(),
        "built": built,
        "size": (summary or {}).get("size"),
        "stages": stages,
        "models": models,
        "datasets": datasets,
        "summary": None,
        "build_command": BUILD_HINT,
    }
    if summary is not None:
        out["summary"] = {k: summary.get(k) for k in ("built", "build_seconds", "vocab", "model_config", "ce",
                                                      "eval_sequences", "quality", "source")}
    return out


def format_status(status: dict) -> str:
    """A short human-readable report of :func:`demo_status`'s result."""
    lines = [f"demo suite at {status['root']}: " + (f"built ({status['size']})" if status["built"] else "not built")]
    done = [n for n, s in status["stages"].items() if s["finished"]]
    lines.append(f"  stages finished: {', '.join(done) if done else 'none'}")
    for name, m in status["models"].items():
        flag = "built" if m["built"] else "missing"
        extra = "" if m["ln_free"] is None else f", {'LN-free' if m['ln_free'] else 'with LayerNorm'}"
        lines.append(f"  model   {m['spec']:<14} {flag}{extra}: {m['path']}")
    for name, d in status["datasets"].items():
        flag = "built" if d["built"] else "missing"
        lines.append(f"  dataset {name:<19} {flag}: {d['path']}")
    s = status.get("summary")
    if s and s.get("ce"):
        lines.append(ce_table(s["ce"]))
        lines += [f"  {t}" for t in (s.get("quality") or {}).get("statements", [])]
    if not status["built"]:
        lines.append(f"  build it: {status['build_command']}")
    return "\n".join(lines)


def ce_table(ce: dict) -> str:
    """The CE table (models x datasets, nats) as aligned text."""
    sets = list(next(iter(ce.values())).keys())
    lines = ["  mean CE (nats)  " + "".join(f"{s:>20}" for s in sets)]
    for model, row in ce.items():
        lines.append(f"  {model:<15} " + "".join(f"{row[s]:>20.4f}" for s in sets))
    return "\n".join(lines)
