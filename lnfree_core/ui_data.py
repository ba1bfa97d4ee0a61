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
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from .config import TrainConfig
from .optim import lr_at
from .schedule import HParams, Schedule, ScheduleError

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
            "started": datetime.fromtimestamp(st.started) if st.started else pd.NaT,  # local time
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

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM the command's process group (SIGKILL after `timeout` s); its exit code."""
        import signal

        if not self.running:
            return self.returncode
        try:
            os.killpg(self._proc.pid, signal.SIGTERM)
            return self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self._proc.pid, signal.SIGKILL)
            return self._proc.wait()
        except ProcessLookupError:
            return self._proc.wait()


def python_command(*args: str) -> list[str]:
    """`python -m lnfree_core ARGS` with this interpreter."""
    return [sys.executable, "-m", "lnfree_core", *args]


# ---------------------------------------------------------------------------------------- demo suite
DEMO_BUILD = BackgroundCommand(Path(os.environ.get("TMPDIR", "/tmp")) / f"lnfree-demo-build-{os.getuid()}.log")


DEMO_CLI_MODULE = "lnfree_core.cli.demo"  # `python -m lnfree_core demo build|status`
DEMO_MODULE = "lnfree_core.demo"


def _has_module(name: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def demo_models_available() -> bool:
    """Whether `demo:NAME` model specs can be resolved in this install (lnfree_core.demo.paths)."""
    return _has_module(DEMO_MODULE) and _has_module(DEMO_MODULE + ".paths")


def demo_suite_state() -> dict[str, Any]:
    """{'available': bool, 'status': what lnfree_core.demo.status() returns (or None), 'error': str|None}.

    'available' is False when this install has no demo suite command (lnfree_core.cli.demo, which
    `python -m lnfree_core demo build` runs).
    """
    import importlib

    if not _has_module(DEMO_CLI_MODULE):
        return {"available": False, "status": None, "error": None}
    try:
        mod = importlib.import_module(DEMO_MODULE)
    except Exception as e:  # a broken install must not break the page
        return {"available": True, "status": None, "error": f"{type(e).__name__}: {e}"}
    fn = getattr(mod, "status", None)
    if not callable(fn):
        return {"available": True, "status": None, "error": None}
    try:
        return {"available": True, "status": fn(), "error": None}
    except Exception as e:
        return {"available": True, "status": None, "error": f"{type(e).__name__}: {e}"}


def gpt2_id_mapper(model_spec: str | None, dataset: str | None = None) -> Callable[[list[int]], list[int]] | None:
    """For a model (else a dataset) that uses a compact vocabulary (the demo suite's): a function mapping
    its token ids to GPT-2 ids (lnfree_core.data.vocab_map), for display; None when ids are GPT-2 ids."""
    import importlib.util

    if importlib.util.find_spec("lnfree_core.data.vocab_map") is None:
        return None
    from .data.vocab_map import load_vocab_map, to_gpt2_ids

    vmap = None
    for ref in (model_spec, dataset):
        if ref and vmap is None:
            try:
                vmap = load_vocab_map(ref)
            except (OSError, ValueError):
                vmap = None
    if vmap is None:
        return None
    return lambda ids: [int(i) for i in to_gpt2_ids(list(ids), vmap)]


# ---------------------------------------------------------------------------------------- analysis pages
# Frames and HTML for the analysis pages (Compare, Outliers, First tokens, Confidence neurons, DLA).
# Every number in them comes from lnfree_core.analysis; these helpers only reshape it for charts and
# tables (the one exception is loss_histogram, which counts per-token losses into bins for a chart).
SUMMARY_STATS = {"mean": "mean (Table 1)", "median": "median", "p95": "central 95% range",
                 "p99": "central 99% range", "p999": "central 99.9% range"}
RANGE_STATS = ("p95", "p99", "p999")


def model_kind(spec: str) -> str:
    """'demo', 'run', 'checkpoint', 'folder' or 'hub': where a model spec points (nothing is loaded)."""
    if spec.startswith("demo:"):
        return "demo"
    path = Path(spec.partition("@")[0])
    if (path / "checkpoints").is_dir():
        return "run"
    if (path / "fakeln.json").is_file():
        return "checkpoint"
    if path.exists() or (os.sep in spec and not re.fullmatch(r"[\w.-]+/[\w.-]+", spec)):
        return "folder"
    return "hub"


def model_label(spec: str) -> str:
    """A short name for a model spec: 'demo ln-free', a run's or folder's name ('name@120' for a
    step), or the Hub id itself."""
    kind = model_kind(spec)
    if kind == "demo":
        return f"demo {spec.split(':', 1)[1]}"
    if kind == "hub":
        return spec
    path_s, at, step = spec.partition("@")
    path = Path(path_s)
    name = path.name
    if kind == "checkpoint" and path.parent.name == "checkpoints" and path.name.startswith("step_"):
        name = f"{path.parent.parent.name}@{int(path.name.split('_')[-1])}"  # RUN/checkpoints/step_N
    return f"{name}@{step}" if at else name


def unique_labels(specs: Sequence[str]) -> dict[str, str]:
    """{spec: label} with labels made unique ('x', 'x (2)', ...) in the order given."""
    out: dict[str, str] = {}
    for spec in specs:
        base = label = model_label(spec)
        k = 1
        while label in out.values():
            k += 1
            label = f"{base} ({k})"
        out[spec] = label
    return out


def model_context(spec: str) -> int | None:
    """A model's context length (config.json n_positions / max_position_embeddings) when it can be read
    without loading weights: a folder, a run (newest checkpoint), a checkpoint, a built demo model, a
    Hub id in the local cache or one of the paper's; None otherwise."""
    kind = model_kind(spec)
    cfgs: list[Path] = []
    if kind == "demo":
        try:
            from .demo.paths import demo_model_path

            return model_context(str(demo_model_path(spec.split(":", 1)[1])))
        except Exception:  # no demo suite, or not built
            return None
    if kind == "hub":
        if re.fullmatch(r"(openai-community/)?gpt2(-medium|-large|-xl)?|schaeff/gpt2-\w+", spec):
            return 1024
        try:
            from huggingface_hub import try_to_load_from_cache

            found = try_to_load_from_cache(spec, "config.json")
            cfgs = [Path(found)] if isinstance(found, str) else []
        except Exception:
            cfgs = []
    else:
        path_s, _, step = spec.partition("@")
        path = Path(path_s)
        if kind == "run":
            ckpts = sorted((path / "checkpoints").glob("step_*/config.json"))
            cfgs = [path / "checkpoints" / f"step_{int(step):08d}" / "config.json"] if step.isdigit() else ckpts[-1:]
        else:
            cfgs = [path / "config.json"]
    for cfg in cfgs:
        try:
            data = json.loads(cfg.read_text())
        except (OSError, ValueError):
            continue
        for key in ("n_positions", "max_position_embeddings", "n_ctx"):
            if isinstance(data.get(key), int):
                return data[key]
    return None

def model_option_text(spec: str) -> str:
    """How a model spec reads in a picker: 'demo: ln-free', 'run: name', 'folder: name', 'Hub: id'."""
    kind = model_kind(spec)
    prefix = {"demo": "demo", "run": "run", "checkpoint": "checkpoint", "folder": "folder", "hub": "Hub"}[kind]
    name = spec.split(":", 1)[1] if kind == "demo" else model_label(spec)
    return f"{prefix}: {name}"


def model_spec_problem(spec: str, hub_ok: bool) -> str | None:
    """Why a model spec cannot be loaded as it stands (None when it looks usable); nothing is loaded."""
    kind = model_kind(spec)
    if kind == "demo":
        return None if spec.split(":", 1)[1] in demo_catalog()["models"] else \
            f"`{spec}`: the demo suite is not built here (Home page: Build the demo suite)."
    if kind == "hub":
        if hub_ok:
            return None
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = isinstance(try_to_load_from_cache(spec, "config.json"), str)
        except Exception:  # a malformed id, or no cache
            cached = False
        return None if cached else f"`{spec}`: not in the local Hugging Face cache and the Hub is not reachable."
    path_s, _, step = spec.partition("@")
    path = Path(path_s)
    if not path.exists():
        return f"`{path}` does not exist."
    if kind == "run":
        from .checkpoint import latest_checkpoint

        if step:
            ok = (path / "checkpoints" / f"step_{int(step) if step.isdigit() else -1:08d}").is_dir()
            return None if ok else f"run `{path.name}` has no checkpoint for step {step}."
        return None if latest_checkpoint(path) is not None else f"run `{path.name}` has no checkpoint yet."
    if kind == "folder":
        if not (path / "config.json").is_file():
            return f"`{path}` is not a Hugging Face model folder (no config.json)."
        if not any(path.glob("*.safetensors")):
            return f"`{path}` has no .safetensors weights."
    return None


def demo_catalog(root: str | os.PathLike | None = None) -> dict[str, dict[str, str]]:
    """What a *built* demo suite offers (lnfree_core.demo.paths; root: its default, ./lnfree_home/demo):
    {'models': {name: 'demo:name'}, 'datasets': {name: folder}}; both empty when this install has no
    demo suite or it is not built."""
    import importlib
    import importlib.util

    out: dict[str, dict[str, str]] = {"models": {}, "datasets": {}}
    try:
        if importlib.util.find_spec("lnfree_core.demo") is None or \
                importlib.util.find_spec("lnfree_core.demo.paths") is None:
            return out
        paths = importlib.import_module("lnfree_core.demo.paths")
        for name in paths.MODEL_NAMES:
            try:
                paths.demo_model_path(name, root)  # raises FileNotFoundError until it is built
            except FileNotFoundError:
                continue
            out["models"][name] = f"demo:{name}"
        for name in paths.DATASET_NAMES:
            try:
                out["datasets"][name] = str(paths.demo_dataset_path(name, root, must_exist=True))
            except FileNotFoundError:
                continue
    except Exception:  # a broken or half-written install must not break a page
        return {"models": {}, "datasets": {}}
    return out


# ---------------------------------------------------------------------------------------- Compare
@dataclass(frozen=True)
class CERow:
    """One evaluated (model, dataset) pair as the Compare page shows it."""

    label: str
    dataset: str
    summary: Any  # lnfree_core.analysis.ce_summary.CESummary
    ln_free: bool
    group: str | None = None


def ce_summary_frame(rows: Sequence[CERow]) -> pd.DataFrame:
    """Every summary number of every pair: model, dataset, group, ln_free, tokens, mean, median and
    the lower/upper ends of the central 95/99/99.9% ranges."""
    cols = ["model", "dataset", "group", "ln_free", "tokens", "mean", "median"] + \
        [f"{k}_{e}" for k in RANGE_STATS for e in ("lo", "hi")]
    data = []
    for r in rows:
        s = r.summary
        rec = {"model": r.label, "dataset": r.dataset, "group": r.group or "", "ln_free": bool(r.ln_free),
               "tokens": int(s.tokens), "mean": float(s.mean), "median": float(s.median)}
        for k in RANGE_STATS:
            lo, hi = getattr(s, k)
            rec[f"{k}_lo"], rec[f"{k}_hi"] = float(lo), float(hi)
        data.append(rec)
    return pd.DataFrame(data, columns=cols)


def stat_table(rows: Sequence[CERow], stat: str = "mean"):
    """Table 1 (lnfree_core.analysis.tables.ce_table) of `stat` ('mean' or 'median'): the lowest per
    group and dataset marked, LN-free gaps to it."""
    from .analysis.tables import TableEntry, ce_table

    if stat not in ("mean", "median"):
        raise ValueError(f"stat must be 'mean' or 'median' for Table 1, got {stat!r}")
    return ce_table([TableEntry(r.label, r.dataset, float(getattr(r.summary, stat)), ln_free=bool(r.ln_free),
                                group=r.group or None) for r in rows])


def range_frame(rows: Sequence[CERow], stat: str, digits: int = 4) -> pd.DataFrame:
    """Models x datasets of a central percentile range ('p95', 'p99', 'p999') as '[lo, hi]' texts."""
    if stat not in RANGE_STATS:
        raise ValueError(f"stat must be one of {RANGE_STATS}, got {stat!r}")
    models: list[str] = []
    datasets: list[str] = []
    cells: dict[tuple[str, str], str] = {}
    for r in rows:
        if r.label not in models:
            models.append(r.label)
        if r.dataset not in datasets:
            datasets.append(r.dataset)
        lo, hi = getattr(r.summary, stat)
        cells[(r.label, r.dataset)] = f"[{lo:.{digits}f}, {hi:.{digits}f}]"
    data = [{"Model": m, **{d: cells.get((m, d), "-") for d in datasets}} for m in models]
    return pd.DataFrame(data, columns=["Model", *datasets])


def frame_markdown(df: pd.DataFrame) -> str:
    """A frame as a Markdown table (cells as text, '|' escaped)."""
    def cell(v: Any) -> str:
        return str(v).replace("|", "\\|")

    head = [cell(c) for c in df.columns]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def loss_histogram(losses: Mapping[str, Any], bins: int = 60, floor: float = 1e-6) -> pd.DataFrame:
    """Per-token CE distributions on log-spaced bins shared by all models, for a log-x chart.

    Bins span [the smallest finite loss of any model, but at least `floor`; the largest]; losses below
    `floor` (0 included) count in the first bin. Rows: model, lo, hi, count, share (count / the
    model's finite losses). Non-finite losses are left out.
    """
    finite = {}
    bottom, top = math.inf, 0.0
    for label, arr in losses.items():
        v = np.asarray(arr, dtype=np.float64).ravel()
        v = v[np.isfinite(v)]
        finite[label] = v
        if v.size:
            bottom, top = min(bottom, float(v.min())), max(top, float(v.max()))
    bottom = max(floor, bottom if math.isfinite(bottom) else floor)
    top = max(top, bottom * 10)
    edges = np.geomspace(bottom, top * (1 + 1e-9), bins + 1)
    parts = []
    for label, v in finite.items():
        counts, _ = np.histogram(np.clip(v, bottom, None), bins=edges)
        parts.append(pd.DataFrame({"model": label, "lo": edges[:-1], "hi": edges[1:], "count": counts,
                                   "share": counts / max(1, v.size)}))
    if not parts:
        return pd.DataFrame(columns=["model", "lo", "hi", "count", "share"])
    return pd.concat(parts, ignore_index=True)


# ---------------------------------------------------------------------------------------- Outliers
def ranked_frame(ranked: Sequence[Any], exceeding: Iterable[int] = ()) -> pd.DataFrame:
    """Ranked sequences (analysis.outliers.RankedSequence) as rows: rank, sequence, mean CE, max CE,
    max at position, over threshold (whether the sequence is among `exceeding`)."""
    over = {int(i) for i in exceeding}
    cols = ["rank", "sequence", "mean CE", "max CE", "max at position", "over threshold"]
    data = [{"rank": k + 1, "sequence": r.index, "mean CE": r.mean, "max CE": r.max,
             "max at position": r.argmax_position, "over threshold": r.index in over} for k, r in enumerate(ranked)]
    return pd.DataFrame(data, columns=cols)


def token_frame(rows: Sequence[Any], label_a: str = "loss", label_b: str = "loss_b") -> pd.DataFrame:
    """Per-token rows of one sequence (TokenLoss, or TokenDiff of two models) for tables and charts:
    position, token_id, token (unicode_escape), and the loss, or the two losses and diff = b - a."""
    data = []
    for r in rows:
        rec = {"position": r.position, "token_id": r.token_id, "token": r.escaped}
        if hasattr(r, "diff"):
            rec.update({label_a: r.loss_a, label_b: r.loss_b, "diff": r.diff})
        else:
            rec[label_a] = r.loss
        data.append(rec)
    cols = ["position", "token_id", "token", label_a] + ([label_b, "diff"] if rows and hasattr(rows[0], "diff") else [])
    return pd.DataFrame(data, columns=cols).astype({c: float for c in cols[3:]})


def display_token(text: str) -> str:
    """What a token shows as in the coloured view: printable text as is; a newline as '⏎' and a line
    break; tabs and other control or invisible characters as their unicode_escape form ('\\x0c')."""
    if text == "":
        return "∅"
    if text.isprintable():
        return text
    out = []
    for ch in text:
        if ch == "\n":
            out.append("⏎\n")
        elif ch.isprintable():
            out.append(ch)
        else:
            out.append(ch.encode("unicode_escape").decode("ascii"))
    return "".join(out)


def _rgba_loss(value: float | None, vmax: float) -> str:
    if value is None or not math.isfinite(value):
        return "transparent"
    a = min(1.0, math.log1p(max(0.0, value)) / math.log1p(vmax)) if vmax > 0 else 0.0
    return f"rgba(220, 38, 38, {0.06 + 0.84 * a:.3f})"


def _rgba_diff(value: float | None, vmax: float) -> str:
    if value is None or not math.isfinite(value):
        return "transparent"
    a = min(1.0, abs(value) / vmax) if vmax > 0 else 0.0
    rgb = "220, 38, 38" if value > 0 else "37, 99, 235"
    return f"rgba({rgb}, {0.04 + 0.86 * a:.3f})"


def token_spans_html(rows: Sequence[Any], values: Sequence[float | None], *, vmax: float = 10.0,
                     diverging: bool = False, value_name: str = "loss", highlight: int | None = None,
                     context: Iterable[int] = ()) -> str:
    """A sequence's tokens as coloured HTML spans (text escaped), one per row (TokenLoss/TokenDiff),
    coloured by `values` (None: uncoloured): red by log(1 + loss) up to `vmax`, or, when `diverging`,
    blue (< 0) / red (> 0) by |value| / vmax. Hovering shows position, id, escaped text and value.
    The token at position `highlight` is outlined, the `context` positions underlined."""
    import html

    ctx = {int(p) for p in context}
    spans = []
    for r, v in zip(rows, values):
        color = _rgba_diff(v, vmax) if diverging else _rgba_loss(v, vmax)
        val = "N/A" if v is None else (f"{v:+.4f}" if diverging else f"{v:.4f}")
        title = f"position {r.position} | id {r.token_id} | '{r.escaped}' | {value_name} {val}"
        style = f"background:{color};border-radius:3px;"
        if highlight is not None and r.position == highlight:
            style += "outline:2px solid #111;outline-offset:1px;font-weight:700;"
        elif r.position in ctx:
            style += "text-decoration:underline;text-decoration-style:dotted;text-underline-offset:3px;"
        spans.append(f'<span title="{html.escape(title, quote=True)}" style="{style}">'
                     f"{html.escape(display_token(r.text))}</span>")
    return ('<div style="font-family:ui-monospace,monospace;font-size:0.85rem;white-space:pre-wrap;'
            'word-break:break-all;line-height:1.9">' + "".join(spans) + "</div>")


# ---------------------------------------------------------------------------------------- First tokens
def norm_profile_frame(profiles: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    """{model: FirstTokenStats.profile()} as a long frame: model, point (residual point name), layer
    (its index), position ('first token' | 'other tokens'), norm, ratio (first / other)."""
    data = []
    for label, prof in profiles.items():
        for i, (pt, f, r, q) in enumerate(zip(prof["points"], prof["first"], prof["rest"], prof["ratio"])):
            data.append({"model": label, "point": pt, "layer": i, "position": "first token", "norm": f, "ratio": q})
            data.append({"model": label, "point": pt, "layer": i, "position": "other tokens", "norm": r, "ratio": q})
    return pd.DataFrame(data, columns=["model", "point", "layer", "position", "norm", "ratio"])


def sink_frames(rates: Mapping[str, Any]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """{model: SinkRate} as (overall: model, rate, ci_lo, ci_hi, threshold; per layer: model, layer, rate)."""
    overall = pd.DataFrame([{"model": m, "rate": r.rate, "ci_lo": r.ci[0], "ci_hi": r.ci[1], "threshold": r.threshold}
                            for m, r in rates.items()], columns=["model", "rate", "ci_lo", "ci_hi", "threshold"])
    per_layer = pd.DataFrame([{"model": m, "layer": i, "rate": v} for m, r in rates.items()
                              for i, v in enumerate(r.per_layer)], columns=["model", "layer", "rate"])
    return overall, per_layer


# ---------------------------------------------------------------------------------------- Confidence neurons
def cn_scatter_frame(label: str, scores: Any, marked: Sequence[int]) -> pd.DataFrame:
    """One row per last-layer neuron (ConfidenceScores): model, neuron, norm, logit_var, score, and
    top = its 1-based rank among `marked` (0 when not marked)."""
    rank = {int(n): k + 1 for k, n in enumerate(marked)}
    n = len(scores.score)
    return pd.DataFrame({"model": label, "neuron": np.arange(n), "norm": np.asarray(scores.norm, dtype=float),
                         "logit_var": np.asarray(scores.logit_var, dtype=float),
                         "score": np.asarray(scores.score, dtype=float), "top": [rank.get(i, 0) for i in range(n)]})


def ablation_frames(abl: Mapping[str, Mapping[str, Any]]) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """{model: AblationResult.to_dict()} as (baseline: model, ce, entropy, tokens; single: model, rank
    (1 = the top neuron), neuron, ce, entropy, delta_ce, delta_entropy, rel_ce, rel_entropy;
    cumulative: model, k, neurons and the same columns) -- the values of the paper's Fig. 8 and 9."""
    cols = ["ce", "entropy", "delta_ce", "delta_entropy", "rel_ce", "rel_entropy"]
    base, single, cum = [], [], []
    for m, d in abl.items():
        base.append({"model": m, "ce": d["baseline"]["ce"], "entropy": d["baseline"]["entropy"], "tokens": d["tokens"]})
        single += [{"model": m, "rank": k + 1, "neuron": r["neuron"], **{c: r[c] for c in cols}}
                   for k, r in enumerate(d["single"])]
        cum += [{"model": m, "k": k + 1, "neurons": ", ".join(map(str, r["neurons"])), **{c: r[c] for c in cols}}
                for k, r in enumerate(d["cumulative"])]
    return (pd.DataFrame(base, columns=["model", "ce", "entropy", "tokens"]),
            pd.DataFrame(single, columns=["model", "rank", "neuron", *cols]),
            pd.DataFrame(cum, columns=["model", "k", "neurons", *cols]))


def svd_frame(svds: Mapping[str, Any], neurons: int = 1) -> pd.DataFrame:
    """{model: UnembedSVD} as a long frame for the paper's Fig. 7: model, index (of the singular
    vector), series ('singular value (S / S0)', or '|cos| with top neuron k' for the first `neurons`
    of each model's top neurons), neuron (its index; -1 for singular values), value."""
    parts = []
    for m, s in svds.items():
        sv = np.asarray(s.singular_values, dtype=float)
        idx = np.arange(sv.size)
        parts.append(pd.DataFrame({"model": m, "index": idx, "series": "singular value (S / S0)", "neuron": -1,
                                   "value": sv}))
        cos = np.asarray(s.cosines, dtype=float)
        for k, n in enumerate(list(s.neurons)[:neurons]):
            parts.append(pd.DataFrame({"model": m, "index": idx, "series": f"|cos| with top neuron {k + 1}",
                                       "neuron": int(n), "value": cos[k]}))
    if not parts:
        return pd.DataFrame(columns=["model", "index", "series", "neuron", "value"])
    return pd.concat(parts, ignore_index=True)


# ---------------------------------------------------------------------------------------- DLA
def nmae_head_frame(results: Mapping[str, Any]) -> pd.DataFrame:
    """{model: NMAEResult} as a long frame: model, layer, head, nmae (percent; NaN where undefined)."""
    data = [{"model": m, "layer": i, "head": h, "nmae": float("nan") if v is None else float(v)}
            for m, r in results.items() for i, row in enumerate(r.per_head) for h, v in enumerate(row)]
    return pd.DataFrame(data, columns=["model", "layer", "head", "nmae"])


def nmae_summary_frame(results: Mapping[str, Any]) -> pd.DataFrame:
    """{model: NMAEResult}: model, NMAE (%), CI low, CI high, granularity (eq. 10 and its bootstrap CI)."""
    return pd.DataFrame([{"model": m, "NMAE (%)": r.overall, "CI low": r.ci[0], "CI high": r.ci[1],
                          "granularity": r.granularity} for m, r in results.items()],
                        columns=["model", "NMAE (%)", "CI low", "CI high", "granularity"])


def job_fraction(job: int, n_jobs: int, done: int, total: int) -> float:
    """Overall progress when job `job` (0-based) of `n_jobs` is `done` of `total` through."""
    if n_jobs <= 0:
        return 1.0
    inner = min(1.0, done / total) if total > 0 else 1.0
    return min(1.0, max(0.0, (job + inner) / n_jobs))


def built_demo_models() -> list[str]:
    """`demo:NAME` specs of the demo-suite models that are built ([] without a demo suite)."""
    return list(demo_catalog()["models"].values())


def built_demo_datasets() -> dict[str, str]:
    """{name: folder} of the demo-suite datasets that are built ({} without a demo suite)."""
    return dict(demo_catalog()["datasets"])


def demo_tables(status: Mapping[str, Any]) -> dict[str, pd.DataFrame]:
    """Tables of a demo_status() dict: 'models', 'datasets', 'stages' and (once built) 'ce' (nats)."""
    models = pd.DataFrame([
        {"model": m.get("spec", f"demo:{n}"), "built": bool(m.get("built")),
         "LN-free": {None: "", True: "yes", False: "no"}.get(m.get("ln_free"), ""), "folder": m.get("path", "")}
        for n, m in (status.get("models") or {}).items()
    ], columns=["model", "built", "LN-free", "folder"])
    datasets = pd.DataFrame([
        {"dataset": n, "built": bool(d.get("built")), "folder": d.get("path", "")}
        for n, d in (status.get("datasets") or {}).items()
    ], columns=["dataset", "built", "folder"])
    stages = pd.DataFrame([
        {"stage": n, "finished": bool(s.get("finished")), "seconds": s.get("seconds")}
        for n, s in (status.get("stages") or {}).items()
    ], columns=["stage", "finished", "seconds"])
    out = {"models": models, "datasets": datasets, "stages": stages}
    ce = (status.get("summary") or {}).get("ce")
    if isinstance(ce, dict) and ce:
        out["ce"] = pd.DataFrame(ce).T.rename_axis("model").reset_index()
    return out
