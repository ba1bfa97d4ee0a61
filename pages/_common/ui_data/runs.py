"""Training runs as the Train and Runs pages show them: pace and ETA, progress captions, what a run was
asked to do, device choices, launch plans (single runs and LN-free / vanilla pairs) and the runs table.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from lnfree_core.config import TrainConfig
from .metrics import to_float


MODE_CHOICES = {"ln-free": "LN removal", "vanilla": "vanilla (control)", "pair": "both, as a pair"}


def seconds_per_step(steps: pd.DataFrame, window: int = 50) -> float | None:
    """Recent wall time per optimizer step: the mean gap between the last `window` step rows, leaving
    out pauses (a resume: gaps over both 20x the median and 30 s); else tokens per step / tokens per
    second of the last row; None when unknown."""
    if steps.empty:
        return None
    tail = steps.tail(window + 1)
    if len(tail) >= 2:
        dt = np.diff(tail["time"].to_numpy(dtype=float)) / np.maximum(1, np.diff(tail["step"].to_numpy()))
        dt = dt[np.isfinite(dt) & (dt > 0)]
        if len(dt):
            dt = dt[dt <= max(20 * np.median(dt), 30.0)]
            return float(np.mean(dt))
    last = steps.iloc[-1]
    tps, tokens, step = float(last["tokens_per_s"]), float(last["tokens"]), int(last["step"])
    if math.isfinite(tps) and tps > 0 and math.isfinite(tokens) and step > 0:
        return tokens / step / tps
    return None


def eta_seconds(steps: pd.DataFrame, step: int, max_steps: int | None) -> float | None:
    """Seconds left to reach max_steps at the recent pace (None when unknown, 0 when done)."""
    if not max_steps:
        return None
    if step >= max_steps:
        return 0.0
    sps = seconds_per_step(steps)
    return None if sps is None else sps * (max_steps - step)


def format_duration(seconds: float | None) -> str:
    """'1 h 05 min', '3 min 20 s', '12 s'; '?' when unknown."""
    if seconds is None or not math.isfinite(seconds):
        return "?"
    s = int(round(max(0.0, seconds)))
    if s >= 3600:
        return f"{s // 3600} h {s % 3600 // 60:02d} min"
    if s >= 60:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s} s"


def progress_text(step: int, max_steps: int | None, eta: float | None, state: str) -> tuple[float, str]:
    """(fraction for a progress bar, caption) of a run."""
    if not max_steps:
        return 0.0, f"{state}: step {step}"
    frac = min(1.0, max(0.0, step / max_steps))
    text = f"{state}: step {step} of {max_steps} ({frac:.0%})"
    if state in ("running", "queued") and step < max_steps:
        text += f", about {format_duration(eta)} left"
    return frac, text


def run_request(run_dir: str | os.PathLike) -> dict[str, Any]:
    """What a run was asked to do: config.yaml (resolved, written by the trainer), else request.yaml."""
    for name in ("config.yaml", "request.yaml"):
        try:
            data = yaml.safe_load((Path(run_dir) / name).read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError):
            continue
        if isinstance(data, dict):
            return data
    return {}


@dataclass(frozen=True)
class DeviceChoice:
    label: str
    device: str  # TrainConfig.device
    nproc: int  # processes (torchrun when > 1)
    distributed: str = "ddp"  # TrainConfig.distributed (used when nproc > 1)


def device_choices(n_gpus: int) -> list[DeviceChoice]:
    """CPU, each GPU alone, and 2..n GPUs together (torchrun, one process per GPU) with DDP, then FSDP."""
    out = [DeviceChoice("CPU", "cpu", 1)]
    out += [DeviceChoice(f"GPU {i} (cuda:{i})", f"cuda:{i}", 1) for i in range(n_gpus)]
    out += [DeviceChoice(f"{k} GPUs (torchrun, DDP)", "cuda", k) for k in range(2, n_gpus + 1)]
    out += [DeviceChoice(f"{k} GPUs (torchrun, FSDP: sharded weights)", "cuda", k, "fsdp") for k in range(2, n_gpus + 1)]
    return out


def pair_names(name: str) -> tuple[str, str]:
    """The run names of an LN-removal / vanilla pair launched under `name`."""
    return f"{name}-lnfree", f"{name}-vanilla"


def partner_run(name: str) -> str | None:
    """The other run of a pair ('x-lnfree' <-> 'x-vanilla'), or None if `name` is not one of a pair."""
    for a, b in (("-lnfree", "-vanilla"), ("-vanilla", "-lnfree")):
        if name.endswith(a) and len(name) > len(a):
            return name[: -len(a)] + b
    return None


def launch_plan(root: str | os.PathLike, name: str, *, model: str, dataset: str, schedule: str | dict,
                mode: str, device: str = "auto", overrides: Mapping[str, Any] | None = None,
                seed: int = 0, save_every: int | None = None,
                distributed: str = "ddp") -> list[tuple[str, dict[str, Any]]]:
    """[(run name, TrainConfig dict)] to hand to jobs.start_run, validated (ConfigError if not).

    mode 'ln-free' or 'vanilla' gives one run called `name`; mode 'pair' gives `<name>-lnfree` and
    `<name>-vanilla` with identical model, data (same seed, so the same data order), schedule and
    overrides, differing only in mode. Overrides that are None are left out.
    """
    if mode not in MODE_CHOICES:
        raise ValueError(f"mode must be one of {list(MODE_CHOICES)}, got {mode!r}")
    if not model:
        raise ValueError("choose a base model")
    if not dataset:
        raise ValueError("choose a dataset")
    ov = {k: v for k, v in (overrides or {}).items() if v is not None}
    runs = list(zip(pair_names(name), ("ln-free", "vanilla"))) if mode == "pair" else [(name, mode)]
    plan = []
    for run_name, run_mode in runs:
        cfg: dict[str, Any] = {
            "model": model, "out": str(Path(os.path.abspath(root)) / run_name), "dataset": dataset,
            "schedule": schedule, "mode": run_mode, "device": device, "seed": seed, "overrides": dict(ov),
            "distributed": distributed,
        }
        if save_every is not None:
            cfg["save_every"] = int(save_every)
        TrainConfig.from_dict(cfg)  # raises ConfigError with a message for the user
        plan.append((run_name, cfg))
    return plan


def runs_frame(statuses: Iterable[Any]) -> pd.DataFrame:
    """One row per run (jobs.RunStatus objects): name, state, step, max_steps, progress, loss, mode,
    model, dataset, started (datetime), reason."""
    rows = []
    for st in statuses:
        req = run_request(st.run_dir)
        last = st.last_metrics or {}
        max_steps = st.max_steps
        rows.append({
            "name": st.name,
            "state": st.state,
            "step": st.step,
            "max_steps": max_steps,
            "progress": min(1.0, st.step / max_steps) if max_steps else 0.0,
            "loss": to_float(last.get("loss")) if last else math.nan,
            "mode": req.get("mode", ""),
            "model": str(req.get("model", "")),
            "dataset": str(req.get("dataset", "")),
            "started": datetime.fromtimestamp(st.started) if st.started else pd.NaT,  # local time
            "reason": st.reason or "",
        })
    cols = ["name", "state", "step", "max_steps", "progress", "loss", "mode", "model", "dataset", "started", "reason"]
    return pd.DataFrame(rows, columns=cols)


def parse_keep_steps(text: str | None) -> list[int] | None:
    """'300, 600' -> [300, 600]; empty -> None (the schedule's keep_steps). ValueError says what is wrong."""
    text = (text or "").strip()
    if not text:
        return None
    try:
        steps = [int(x) for x in text.replace(" ", "").split(",") if x]
    except ValueError:
        raise ValueError(f"keep steps: expected comma-separated step numbers like 300,600, got {text!r}") from None
    if any(s < 1 for s in steps):
        raise ValueError(f"keep steps must be >= 1, got {text!r}")
    return steps
