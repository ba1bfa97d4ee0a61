"""Data helpers for the Streamlit app that need no Streamlit: frames for charts, downsampling, ETA,
launch plans, log tails, schedule files as text, and a background command runner.

Everything here is plain Python/pandas so it can be unit-tested without a browser. The pages turn
these frames into widgets and Altair charts.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from .config import TrainConfig
from .optim import lr_at
from .schedule import GROUPS, HParams, Schedule, ScheduleError

GROUP_LABELS = {"mlp": "LN_MLP", "qk": "LN_qk", "v": "LN_v", "f": "LN_f"}
STEP_METRICS = ("loss", "aux_loss", "lr", "grad_norm", "tokens_per_s")
METRIC_TITLES = {
    "loss": "main loss (cross-entropy)",
    "aux_loss": "aux loss (eq. 3)",
    "lr": "learning rate",
    "grad_norm": "gradient norm (before clipping)",
    "tokens_per_s": "tokens / s",
}
MODE_CHOICES = {"ln-free": "LN removal", "vanilla": "vanilla (control)", "pair": "both, as a pair"}
DEFAULT_MAX_POINTS = 3000


# ---------------------------------------------------------------------------------------- schedules
def group_of(block_name: str) -> str:
    """'mlp.3' -> 'mlp', 'f' -> 'f'."""
    return block_name.split(".", 1)[0]


def events_frame(schedule: Schedule) -> pd.DataFrame:
    """One row per removal event of `schedule`: step, block, layer, name, group (label), order."""
    rows = [
        {"step": e.step, "block": e.block, "layer": e.layer, "name": e.name, "group": GROUP_LABELS[e.block]}
        for e in schedule.events()
    ]
    return pd.DataFrame(rows, columns=["step", "block", "layer", "name", "group"])


def lr_frame(hparams: HParams, max_points: int = 2000) -> pd.DataFrame:
    """The LR over training, indexed like metrics.jsonl: `step` = optimizer steps completed, and `lr`
    the LR that step used. At most about `max_points` steps are sampled (always the first, the end of
    warmup and the last), so a long schedule stays cheap to draw."""
    n = int(hparams.max_steps)
    if n < 1:
        return pd.DataFrame({"step": pd.Series([], dtype=int), "lr": pd.Series([], dtype=float)})
    steps = np.unique(np.concatenate([
        np.linspace(1, n, min(n, max_points)).round().astype(int),
        [s for s in (hparams.warmup_steps, hparams.warmup_steps + 1) if 1 <= s <= n],
    ]))
    lrs = [lr_at(int(s) - 1, hparams.lr, hparams.min_lr, hparams.warmup_steps, n) for s in steps]
    return pd.DataFrame({"step": steps, "lr": lrs})


def schedule_to_text(schedule: Schedule, fmt: str) -> str:
    """The schedule file's text, `fmt` 'yaml' or 'json' (what Schedule.save writes)."""
    data = schedule.to_dict()
    if fmt == "yaml":
        return yaml.safe_dump(data, sort_keys=False)
    if fmt == "json":
        return json.dumps(data, indent=2) + "\n"
    raise ValueError(f"format must be 'yaml' or 'json', got {fmt!r}")


def schedule_from_text(text: str | bytes, filename: str) -> Schedule:
    """Parse an uploaded schedule file (.yaml/.yml/.json by name); ScheduleError says what is wrong."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    suffix = Path(filename).suffix.lower()
    try:
        if suffix in (".yaml", ".yml"):
            data = yaml.safe_load(text)
        elif suffix == ".json":
            data = json.loads(text)
        else:
            raise ScheduleError(f"{filename}: a schedule file must end in .yaml, .yml or .json")
    except (yaml.YAMLError, json.JSONDecodeError) as e:
        raise ScheduleError(f"{filename} is not valid {suffix[1:].upper()}: {e}") from None
    if not isinstance(data, dict):
        raise ScheduleError(f"{filename}: expected a mapping with n_layers, starts, gaps, hparams")
    try:
        return Schedule.from_dict(data)
    except (TypeError, ValueError) as e:
        if isinstance(e, ScheduleError):
            raise
        raise ScheduleError(f"{filename}: {e}") from None


def schedule_summary(schedule: Schedule) -> str:
    """One line: name, layers, steps, the event span and the tokens per step."""
    hp = schedule.hparams
    evs = schedule.events()
    return (f"{schedule.name}: {schedule.n_layers} layers, {hp.max_steps} steps, {len(evs)} removal events "
            f"at steps {evs[0].step}..{evs[-1].step}, {hp.tokens_per_step:,} tokens/step")


# ---------------------------------------------------------------------------------------- metrics rows
def to_float(value: Any) -> float:
    """A metrics value as float: None -> nan; 'nan'/'inf' strings (how the trainer writes them) parsed."""
    if value is None:
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def step_frame(rows: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """The step rows of metrics.jsonl as a wide frame: step, loss, aux_loss, lr, grad_norm, tokens_per_s,
    tokens, time (one row per step; a step logged twice keeps its last row)."""
    cols = ["step", *STEP_METRICS, "tokens", "time"]
    data = [
        {"step": int(r["step"]), **{k: to_float(r.get(k)) for k in cols[1:]}}
        for r in rows
        if r.get("type") == "step" and isinstance(r.get("step"), int)
    ]
    df = pd.DataFrame(data, columns=cols)
    if df.empty:
        return df
    return df.drop_duplicates("step", keep="last").sort_values("step").reset_index(drop=True)


def sigma_frame(rows: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """Long frame of every block's tracked sigma: step, block ('mlp.0', ..., 'f'), group (label), sigma."""
    data = []
    for r in rows:
        sig = r.get("sigma")
        if r.get("type") != "step" or not isinstance(sig, dict) or not isinstance(r.get("step"), int):
            continue
        for block, val in sig.items():
            data.append({"step": r["step"], "block": block, "group": GROUP_LABELS.get(group_of(block), block),
                         "sigma": to_float(val)})
    df = pd.DataFrame(data, columns=["step", "block", "group", "sigma"])
    if df.empty:
        return df
    return df.drop_duplicates(["step", "block"], keep="last").sort_values(["block", "step"]).reset_index(drop=True)


def removal_frame(rows: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """The removal events that happened: step, block, layer, name, group (label), sigma."""
    data = []
    for r in rows:
        if r.get("type") != "event" or r.get("kind") != "removal":
            continue
        block, layer = r.get("block"), r.get("layer")
        name = "f" if block == "f" else f"{block}.{layer}"
        data.append({"step": r.get("step"), "block": block, "layer": layer, "name": name,
                     "group": GROUP_LABELS.get(block, str(block)), "sigma": to_float(r.get("sigma"))})
    return pd.DataFrame(data, columns=["step", "block", "layer", "name", "group", "sigma"])


def notable_events(rows: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """Events other than removals and checkpoints (non-finite loss, grad spikes, resumes): step, kind, message."""
    data = [
        {"step": r.get("step"), "kind": r.get("kind"), "message": r.get("message", "")}
        for r in rows
        if r.get("type") == "event" and r.get("kind") not in ("removal", "checkpoint")
    ]
    return pd.DataFrame(data, columns=["step", "kind", "message"])


def metric_long(step_frames: Mapping[str, pd.DataFrame], metrics: Sequence[str] = STEP_METRICS) -> pd.DataFrame:
    """Long frame (run, metric, step, value) from {run label: step_frame}; rows with no value dropped."""
    parts = []
    for run, df in step_frames.items():
        if df.empty:
            continue
        for m in metrics:
            part = pd.DataFrame({"run": run, "metric": m, "step": df["step"], "value": df[m]})
            parts.append(part[np.isfinite(part["value"].to_numpy(dtype=float))])
    if not parts:
        return pd.DataFrame(columns=["run", "metric", "step", "value"])
    return pd.concat(parts, ignore_index=True)


# ---------------------------------------------------------------------------------------- downsampling
def _bucket_extrema(x: np.ndarray, y: np.ndarray, max_points: int) -> np.ndarray:
    """Indices to keep of one series sorted by x: first, last, and each bucket's min and max of y."""
    n = len(x)
    if n <= max_points:
        return np.arange(n)
    buckets = max(1, (max_points - 2) // 2)
    edges = np.linspace(0, n, buckets + 1).astype(int)
    keep = {0, n - 1}
    finite = np.isfinite(y)
    for lo, hi in zip(edges[:-1], edges[1:]):
        if hi <= lo:
            continue
        seg = y[lo:hi]
        ok = finite[lo:hi]
        if not ok.any():
            keep.add(lo)
            continue
        idx = np.flatnonzero(ok)
        keep.add(lo + int(idx[np.argmin(seg[idx])]))
        keep.add(lo + int(idx[np.argmax(seg[idx])]))
    return np.array(sorted(keep))


def downsample(df: pd.DataFrame, x: str = "step", y: str = "value", by: Sequence[str] = (),
               max_points: int = DEFAULT_MAX_POINTS) -> pd.DataFrame:
    """At most about `max_points` rows in all, shared evenly by the series (groups of `by`).

    Each series keeps its first and last point and, in each of its x buckets, the points with the
    smallest and largest y, so spikes survive (a loss spike after a removal event stays visible).
    """
    if df.empty or len(df) <= max_points:
        return df.sort_values([*by, x]).reset_index(drop=True) if not df.empty else df
    groups = list(df.groupby(list(by), sort=True)) if by else [((), df)]
    per = max(8, max_points // max(1, len(groups)))
    out = []
    for _, g in groups:
        g = g.sort_values(x)
        idx = _bucket_extrema(g[x].to_numpy(), g[y].to_numpy(dtype=float), per)
        out.append(g.iloc[idx])
    return pd.concat(out, ignore_index=True)


# ---------------------------------------------------------------------------------------- progress
def seconds_per_step(steps: pd.DataFrame, window: int = 20) -> float | None:
    """Recent wall time per optimizer step: median gap between the last `window` step rows, else
    tokens per step / tokens per second of the last row; None when unknown."""
    if steps.empty:
        return None
    tail = steps.tail(window + 1)
    if len(tail) >= 2:
        dt = np.diff(tail["time"].to_numpy(dtype=float)) / np.maximum(1, np.diff(tail["step"].to_numpy()))
        dt = dt[np.isfinite(dt) & (dt > 0)]
        if len(dt):
            return float(np.median(dt))
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


# ---------------------------------------------------------------------------------------- files
def tail_lines(path: str | os.PathLike, n: int = 40, max_bytes: int = 64 * 1024) -> str:
    """The last `n` lines of a text file (reads at most `max_bytes` from its end); '' if absent.

    Carriage-return progress bars are reduced to their last state per line.
    """
    try:
        with open(path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(max(0, size - max_bytes))
            data = f.read()
    except OSError:
        return ""
    lines = data.decode("utf-8", "replace").split("\n")
    if size > max_bytes:
        lines = lines[1:]  # the first line may be cut
    lines = [ln.rsplit("\r", 1)[-1] if "\r" in ln.rstrip("\r") else ln.rstrip("\r") for ln in lines]
    while lines and not lines[-1].strip():
        lines.pop()
    return "\n".join(lines[-n:])


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


# ---------------------------------------------------------------------------------------- launching
@dataclass(frozen=True)
class DeviceChoice:
    label: str
    device: str  # TrainConfig.device
    nproc: int  # processes (torchrun when > 1)


def device_choices(n_gpus: int) -> list[DeviceChoice]:
    """CPU, each GPU alone, and 2..n GPUs together (torchrun, one process per GPU)."""
    out = [DeviceChoice("CPU", "cpu", 1)]
    out += [DeviceChoice(f"GPU {i} (cuda:{i})", f"cuda:{i}", 1) for i in range(n_gpus)]
    out += [DeviceChoice(f"{k} GPUs (torchrun, DDP)", "cuda", k) for k in range(2, n_gpus + 1)]
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
                seed: int = 0, save_every: int | None = None) -> list[tuple[str, dict[str, Any]]]:
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
        }
        if save_every is not None:
            cfg["save_every"] = int(save_every)
        TrainConfig.from_dict(cfg)  # raises ConfigError with a message for the user
        plan.append((run_name, cfg))
    return plan


# ---------------------------------------------------------------------------------------- runs table
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
            "started": pd.to_datetime(st.started, unit="s") if st.started else pd.NaT,
            "reason": st.reason or "",
        })
    cols = ["name", "state", "step", "max_steps", "progress", "loss", "mode", "model", "dataset", "started", "reason"]
    return pd.DataFrame(rows, columns=cols)


# ---------------------------------------------------------------------------------------- metrics cache
@dataclass
class MetricsCache:
    """Rows of one run's metrics.jsonl read incrementally (only new bytes on each `update`)."""

    run_dir: str
    offset: int = 0
    rows: list[dict[str, Any]] = field(default_factory=list)

    def update(self) -> list[dict[str, Any]]:
        """Read what was appended since the last call; returns the run's effective history (resumes merged)."""
        from jobs import merge_resumed, read_metrics

        new, offset = read_metrics(self.run_dir, self.offset)
        if offset < self.offset:  # the file was replaced: start over
            self.rows = []
        self.rows.extend(new)
        self.offset = offset
        return merge_resumed(self.rows)


# ---------------------------------------------------------------------------------------- background commands
_PROGRESS_RE = re.compile(r"(?:\[|\b)(\d+)\s*/\s*(\d+)(?:\]|\b)|(\d{1,3}(?:\.\d+)?)\s*%")


def parse_progress(text: str) -> float | None:
    """The progress a command's output shows last ('[3/10]', '3/10', '42%'), as a fraction; None if none."""
    for line in reversed(text.splitlines()):
        matches = list(_PROGRESS_RE.finditer(line))
        for m in reversed(matches):
            if m.group(1) is not None:
                done, total = int(m.group(1)), int(m.group(2))
                if total > 0 and done <= total:
                    return done / total
            elif m.group(3) is not None:
                pct = float(m.group(3))
                if 0 <= pct <= 100:
                    return pct / 100
    return None


class BackgroundCommand:
    """One long command (e.g. building the demo suite) run detached from the page that started it.

    Output goes to `log_path`; the process object lives as long as this object (keep one per
    process, at module level), so any page rerun or another browser tab can watch it.
    """

    def __init__(self, log_path: str | os.PathLike):
        self.log_path = Path(log_path)
        self._proc: subprocess.Popen | None = None
        self._lock = threading.Lock()
        self.command: list[str] | None = None
        self.started: float | None = None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self._proc is None else self._proc.poll()

    def start(self, command: Sequence[str], cwd: str | os.PathLike | None = None) -> None:
        """Start `command` (RuntimeError if one is still running)."""
        with self._lock:
            if self.running:
                raise RuntimeError("already running")
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            root = str(Path(__file__).resolve().parent.parent)
            env = dict(os.environ, PYTHONUNBUFFERED="1")
            env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
            with open(self.log_path, "wb") as log:
                self._proc = subprocess.Popen(list(command), stdout=log, stderr=subprocess.STDOUT,
                                              stdin=subprocess.DEVNULL, cwd=cwd, env=env, start_new_session=True)
            self.command, self.started = list(command), time.time()

    def tail(self, n: int = 20) -> str:
        return tail_lines(self.log_path, n) if self._proc is not None else ""

    def progress(self) -> float | None:
        return parse_progress(self.tail(5))

    def wait(self, timeout: float | None = None) -> int | None:
        return None if self._proc is None else self._proc.wait(timeout)


def python_command(*args: str) -> list[str]:
    """`python -m lnfree_core ARGS` with this interpreter."""
    return [sys.executable, "-m", "lnfree_core", *args]


# ---------------------------------------------------------------------------------------- demo suite
DEMO_BUILD = BackgroundCommand(Path(os.environ.get("TMPDIR", "/tmp")) / f"lnfree-demo-build-{os.getuid()}.log")


def demo_suite_state() -> dict[str, Any]:
    """{'available': bool, 'status': what lnfree_core.demo.status() returns (or None), 'error': str|None}.

    'available' is False when this install has no demo suite (lnfree_core.demo is absent).
    """
    import importlib
    import importlib.util

    try:
        if importlib.util.find_spec("lnfree_core.demo") is None:
            return {"available": False, "status": None, "error": None}
        mod = importlib.import_module("lnfree_core.demo")
    except Exception as e:  # a broken install must not break the page
        return {"available": False, "status": None, "error": f"{type(e).__name__}: {e}"}
    fn = getattr(mod, "status", None)
    if not callable(fn):
        return {"available": True, "status": None, "error": None}
    try:
        return {"available": True, "status": fn(), "error": None}
    except Exception as e:
        return {"available": True, "status": None, "error": f"{type(e).__name__}: {e}"}
