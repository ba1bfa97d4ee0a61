"""A run's throughput as the Train page shows it: tokens/s, achieved TFLOP/s, MFU against the device's
bf16 peak (see lnfree_core.throughput for the FLOPs count), and the time of the whole schedule."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from .metrics import to_float
from .runs import format_duration, seconds_per_step


def _recent_median(steps: pd.DataFrame, col: str, window: int = 20) -> float:
    if steps.empty or col not in steps:
        return math.nan
    vals = steps[col].tail(window).to_numpy(dtype=float)
    vals = vals[np.isfinite(vals)]
    return float(np.median(vals)) if len(vals) else math.nan


def throughput_info(rows: Iterable[Mapping[str, Any]], steps: pd.DataFrame, step: int,
                    max_steps: int | None) -> dict[str, Any]:
    """tokens_per_s, tflops, mfu (recent medians; nan when unknown), flops_per_token, device_name,
    peak_bf16_tflops, n_devices (from the run's throughput event), and schedule_s / left_s: the whole
    schedule's and the remaining wall time at the recent pace (None when unknown)."""
    note = next((r for r in reversed(list(rows)) if r.get("type") == "event" and r.get("kind") == "throughput"), {})
    sps = seconds_per_step(steps)
    return {
        "tokens_per_s": _recent_median(steps, "tokens_per_s"),
        "tflops": _recent_median(steps, "tflops"),
        "mfu": _recent_median(steps, "mfu"),
        "flops_per_token": to_float(note.get("flops_per_token")),
        "device_name": note.get("device_name"),
        "peak_bf16_tflops": to_float(note.get("peak_bf16_tflops")),
        "n_devices": int(note.get("n_devices") or 1),
        "schedule_s": sps * max_steps if (sps is not None and max_steps) else None,
        "left_s": sps * max(0, max_steps - step) if (sps is not None and max_steps) else None,
    }


def throughput_caption(info: Mapping[str, Any]) -> str:
    """One line: '12,345 tokens/s · 10.6 TFLOP/s · MFU 38.1% of 8 x NVIDIA H100 (989 TFLOP/s bf16 each) ·
    0.855 GFLOP/token (6N + 12·L·d·T) · whole schedule about 1 h 05 min (20 min left)'."""
    parts = []
    tps = info.get("tokens_per_s", math.nan)
    if math.isfinite(tps):
        parts.append(f"{tps:,.0f} tokens/s")
    tf = info.get("tflops", math.nan)
    if math.isfinite(tf):
        parts.append(f"{tf:.3g} TFLOP/s")
    mfu, peak = info.get("mfu", math.nan), info.get("peak_bf16_tflops", math.nan)
    n = info.get("n_devices", 1)
    devices = f"{n} x {info.get('device_name')}" if n > 1 else str(info.get("device_name"))
    if math.isfinite(mfu) and math.isfinite(peak):
        parts.append(f"MFU {mfu:.1%} of {devices} ({peak:g} TFLOP/s bf16 peak each)")
    elif info.get("device_name"):
        parts.append(f"no MFU on {devices} (no bf16 peak known for it)")
    fpt = info.get("flops_per_token", math.nan)
    if math.isfinite(fpt):
        parts.append(f"{fpt / 1e9:.3g} GFLOP/token (6N + 12·L·d·T)")
    if info.get("schedule_s") is not None:
        parts.append(f"whole schedule about {format_duration(info['schedule_s'])} "
                     f"({format_duration(info.get('left_s'))} left)")
    return " · ".join(parts) if parts else "throughput: no step logged yet"
