"""Schedules as the Schedule page shows them: removal events and the LR curve as frames, and schedule
files as text (YAML/JSON) both ways.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from lnfree_core.optim import lr_at
from lnfree_core.method.schedule import HParams, Schedule, ScheduleError


GROUP_LABELS = {"mlp": "LN_MLP", "qk": "LN_qk", "v": "LN_v", "f": "LN_f",
                # Qwen3's q_norm / k_norm blocks: frozen at LN_qk's events, so charted in its group
                "qn": "LN_qk", "kn": "LN_qk"}


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
