"""LN-removal schedules as data: group starts and gaps, group order, and the training hyperparameters.

Within a group g of the order (default LN_MLP, LN_qk, LN_v, LN^f) the block of layer l is removed at

    step_g(l) = start_g + l * gap_g          (gap 0: every layer of the group at once)

and LN^f, a single block, at start_f (paper appendix B, Tables 3 and 4). A removal event at step s is
applied after s optimizer steps, before step s + 1, with sigma_bar := the sigma_avg tracked so far;
so s >= 1. Groups must not overlap: each group starts after the previous group's last event.
"""

from __future__ import annotations

import difflib
import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import yaml

GROUPS = ("mlp", "qk", "v", "f")
DEFAULT_ORDER = ("mlp", "qk", "v", "f")


class ScheduleError(ValueError):
    """A schedule that cannot run; the message says what is wrong and how to fix it."""


@dataclass(frozen=True)
class Event:
    step: int
    block: str  # "mlp" | "qk" | "v" | "f"
    layer: int | None  # None for the final LN

    @property
    def name(self) -> str:
        return "f" if self.block == "f" else f"{self.block}.{self.layer}"

    def to_dict(self) -> dict:
        return {"step": self.step, "block": self.block, "layer": self.layer}


@dataclass
class HParams:
    """Training hyperparameters of appendix B (Table 3) plus the settings a run needs."""

    micro_batch_size: int = 32
    grad_accum_steps: int = 16
    seq_len: int = 1024
    lr: float = 6e-4
    min_lr: float = 3e-4
    warmup_steps: int = 25
    max_steps: int = 300
    weight_decay: float = 0.01
    aux_weight: float = 0.1  # lambda of eq. 3 (LN-removal runs only)
    sigma_ema: float | None = None  # None: sigma_avg is the last step's value; else EMA factor (see below)
    # The unit sigma_ema applies per (tracking.py): None = once per optimizer step; a token count (or one
    # per block kind, {"mlp": .., "qk": .., "v": .., "f": ..}) = per that many tokens through the block,
    # so the averaging does not depend on micro-batch size, accumulation steps or the number of GPUs.
    sigma_ema_tokens: int | dict[str, int] | None = None  # ignored when sigma_ema is None or 0
    grad_clip: float = 1.0
    grad_checkpointing: bool = False
    adam_betas: tuple[float, float] = (0.9, 0.999)  # the HF Trainer default the reference runs used
    # Training CE skips end-of-text targets (the reference's collator, pad = eos). True in the presets and
    # `auto`; False here so that a schedule file or run config written before this setting trains as before.
    mask_eot_labels: bool = False
    weight_decay_fakeln_gain: bool = False  # also decay FakeLN gamma (the reference's HF Trainer did)
    # Steps whose checkpoints are saved and never rotated away (release checkpoints); steps past
    # max_steps (a preset run shortened with --max-steps) never come and are ignored.
    keep_steps: list[int] = field(default_factory=list)

    def ema_tokens(self, kind: str) -> int | None:
        """The token count per EMA factor for a block kind ("mlp", "qk", "v", "f"), or None (per step)."""
        t = self.sigma_ema_tokens
        if t is None or isinstance(t, int):
            return t
        return t.get(kind)

    def ema_per_step(self, kind: str, world: int = 1) -> float | None:
        """The EMA factor one optimizer step applies to a block kind's sigma_avg (None: last value).

        Per-token memory: ema ** (tokens through the block in one step / sigma_ema_tokens[kind]), with the
        step's tokens micro_batch_size * grad_accum_steps * seq_len * world."""
        if not self.sigma_ema:
            return None
        t = self.ema_tokens(kind)
        if t is None:
            return float(self.sigma_ema)
        return float(self.sigma_ema) ** (self.tokens_per_step * world / t)

    @property
    def tokens_per_step(self) -> int:
        return self.micro_batch_size * self.grad_accum_steps * self.seq_len


@dataclass
class Schedule:
    """A removal schedule for a model with `n_layers` blocks, and its training hyperparameters."""

    n_layers: int
    starts: dict[str, int]
    gaps: dict[str, int]
    order: tuple[str, ...] = DEFAULT_ORDER
    hparams: HParams = field(default_factory=HParams)
    name: str = "custom"
    base_model: str | None = None  # the model the preset was made for (informational)

    # ------------------------------------------------------------------ events
    def group_events(self, group: str) -> list[Event]:
        if group == "f":
            return [Event(int(self.starts["f"]), "f", None)]
        start, gap = int(self.starts[group]), int(self.gaps.get(group, 0))
        return [Event(start + layer * gap, group, layer) for layer in range(self.n_layers)]

    def events(self) -> list[Event]:
        """Every removal event, sorted by step (then by group order, then layer)."""
        rank = {g: i for i, g in enumerate(self.order)}
        evs = [e for g in self.order for e in self.group_events(g)]
        return sorted(evs, key=lambda e: (e.step, rank[e.block], e.layer or 0))

    def events_at(self, step: int) -> list[Event]:
        return [e for e in self.events() if e.step == step]

    def last_event_step(self) -> int:
        return max(e.step for e in self.events())

    # ------------------------------------------------------------------ validation
    def validate(self, n_layers: int | None = None) -> "Schedule":
        """Raise ScheduleError with a clear message if the schedule cannot run (on a model of n_layers)."""
        if sorted(self.order) != sorted(GROUPS):
            raise ScheduleError(f"group order must be a permutation of {list(GROUPS)}, got {list(self.order)}")
        for g in GROUPS:
            if g not in self.starts:
                raise ScheduleError(f"no start step for group {g!r}; give starts for {list(GROUPS)}")
            if g != "f" and int(self.gaps.get(g, -1)) < 0:
                raise ScheduleError(f"gap of group {g!r} must be >= 0 (0 removes every layer at once)")
        if self.n_layers < 1:
            raise ScheduleError(f"n_layers must be >= 1, got {self.n_layers}")
        if n_layers is not None and n_layers != self.n_layers:
            raise ScheduleError(
                f"this schedule is for a model with {self.n_layers} layers but the model has {n_layers}. "
                f"Use a preset for that size, or `--schedule auto` to fit the paper's proportions to it."
            )
        hp = self.hparams
        check_hparam_types(asdict(hp))
        for key in ("micro_batch_size", "grad_accum_steps", "seq_len", "max_steps"):
            if int(getattr(hp, key)) < 1:
                raise ScheduleError(f"{key} must be >= 1, got {getattr(hp, key)}")
        if not (hp.lr > 0 and 0 <= hp.min_lr <= hp.lr):
            raise ScheduleError(f"need lr > 0 and 0 <= min_lr <= lr; got lr={hp.lr}, min_lr={hp.min_lr}")
        if not 0 <= hp.warmup_steps <= hp.max_steps:
            raise ScheduleError(f"warmup_steps must be in [0, max_steps={hp.max_steps}], got {hp.warmup_steps}")
        if hp.aux_weight < 0:
            raise ScheduleError(f"aux_weight must be >= 0 (0 turns the auxiliary loss off), got {hp.aux_weight}")
        if hp.weight_decay < 0:
            raise ScheduleError(f"weight_decay must be >= 0, got {hp.weight_decay}")
        if hp.grad_clip < 0:
            raise ScheduleError(f"grad_clip must be >= 0 (0: no clipping), got {hp.grad_clip}")
        if hp.sigma_ema is not None and not 0 <= hp.sigma_ema < 1:
            raise ScheduleError(f"sigma_ema must be in [0, 1) or null, got {hp.sigma_ema}")
        _validate_ema_tokens(hp)
        if len(hp.adam_betas) != 2 or not all(0 <= b < 1 for b in hp.adam_betas):
            raise ScheduleError(f"adam_betas must be two numbers in [0, 1), got {list(hp.adam_betas)}")
        bad_keep = [s for s in hp.keep_steps if int(s) < 1]
        if bad_keep:
            raise ScheduleError(f"keep_steps must be optimizer steps >= 1, got {bad_keep}")
        first = min(int(self.starts[g]) for g in GROUPS)
        if first < 1:
            raise ScheduleError(
                f"removal events must be at step >= 1 (sigma_avg needs at least one tracked step); "
                f"the first is at step {first}"
            )
        prev_group, prev_last = None, None
        for g in self.order:
            evs = self.group_events(g)
            if prev_last is not None and evs[0].step <= prev_last:
                raise ScheduleError(
                    f"groups overlap: {g} starts at step {evs[0].step} but {prev_group} has its last event at "
                    f"step {prev_last}; start {g} at step {prev_last + 1} or later, or reduce {prev_group}'s gap"
                )
            prev_group, prev_last = g, evs[-1].step
        last = self.last_event_step()
        if last >= hp.max_steps:
            raise ScheduleError(
                f"the last removal event is at step {last} but max_steps is {hp.max_steps}: every event must "
                f"come before the end of training; raise max_steps above {last} or shorten the gaps"
            )
        return self

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict:
        hp = asdict(self.hparams)
        hp["adam_betas"] = list(hp["adam_betas"])
        return {
            "name": self.name,
            "base_model": self.base_model,
            "n_layers": self.n_layers,
            "order": list(self.order),
            "starts": {g: int(self.starts[g]) for g in GROUPS},
            "gaps": {g: int(self.gaps.get(g, 0)) for g in GROUPS if g != "f"},
            "hparams": hp,
        }

    @classmethod
    def from_dict(cls, d: dict) -> "Schedule":
        """Build from a dict (a schedule file), naming any unknown key, wrong type or bad value."""
        if not isinstance(d, dict):
            raise ScheduleError(f"a schedule must be a mapping with n_layers, starts, gaps, hparams; got {type(d).__name__}")
        _unknown_keys("schedule", d, [f.name for f in fields(cls)])
        for key in ("starts", "gaps", "hparams"):
            if d.get(key) is not None and not isinstance(d[key], dict):
                raise ScheduleError(f"schedule {key} must be a mapping, got {d[key]!r}")
        hp_in = dict(d.get("hparams") or {})
        hp_in = check_hparam_types(hp_in, "hparams")
        if "adam_betas" in hp_in:
            hp_in["adam_betas"] = tuple(hp_in["adam_betas"])
        if "n_layers" not in d:
            raise ScheduleError("schedule is missing the field 'n_layers'")
        if "starts" not in d:
            raise ScheduleError("schedule is missing the field 'starts'")
        _unknown_keys("starts", d["starts"], GROUPS)
        _unknown_keys("gaps", d.get("gaps") or {}, [g for g in GROUPS if g != "f"])
        order = d.get("order") or DEFAULT_ORDER
        if isinstance(order, str) or not all(isinstance(g, str) for g in order):
            raise ScheduleError(f"order must be a list of groups, a permutation of {list(GROUPS)}; got {order!r}")
        return cls(
            n_layers=_int_value("n_layers", d["n_layers"]),
            starts={k: _int_value(f"starts.{k}", v) for k, v in d["starts"].items()},
            gaps={k: _int_value(f"gaps.{k}", v) for k, v in (d.get("gaps") or {}).items()},
            order=tuple(order),
            hparams=HParams(**hp_in),
            name=d.get("name", "custom"),
            base_model=d.get("base_model"),
        )

    def save(self, path: str | Path) -> Path:
        """Write to .yaml/.yml or .json (by extension)."""
        path = Path(path)
        data = self.to_dict()
        if path.suffix in (".yaml", ".yml"):
            path.write_text(yaml.safe_dump(data, sort_keys=False))
        else:
            path.write_text(json.dumps(data, indent=2) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Schedule":
        path = Path(path)
        try:
            text = path.read_text()
            if path.suffix in (".yaml", ".yml"):
                data = yaml.safe_load(text)
            else:
                data = json.loads(text)
        except (OSError, ValueError) as e:  # yaml.YAMLError and json.JSONDecodeError are ValueErrors or not:
            raise ScheduleError(f"cannot read schedule file {path}: {e}") from None
        except Exception as e:  # noqa: BLE001 - yaml's errors derive from Exception only
            raise ScheduleError(f"cannot read schedule file {path}: {e}") from None
        if not isinstance(data, dict):
            raise ScheduleError(f"{path}: expected a mapping with n_layers, starts, gaps, hparams")
        try:
            return cls.from_dict(data)
        except ScheduleError as e:
            raise ScheduleError(f"{path}: {e}") from None


def _unknown_keys(where: str, d: dict, known) -> None:
    """Raise ScheduleError naming the first unknown key of `d`, with the closest known one."""
    for key in d:
        if key not in known:
            close = difflib.get_close_matches(str(key), [str(k) for k in known], n=1, cutoff=0.5)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            noun = "hyperparameters" if where in ("hparams", "overrides") else "key"
            raise ScheduleError(f"unknown {noun} [{key!r}] in {where}{hint} (allowed: {', '.join(map(str, known))})")


def _int_value(key: str, v) -> int:
    """An integer setting: ints, or floats with no fractional part (YAML 300.0); else ScheduleError."""
    if isinstance(v, bool) or not isinstance(v, (int, float)) or (isinstance(v, float) and not v.is_integer()):
        raise ScheduleError(f"{key} must be a whole number, got {v!r}")
    return int(v)


def check_hparam_types(hp: dict, where: str = "hparams") -> dict:
    """Check (and normalise) hyperparameter values by HParams' field types; unknown keys named.

    int fields take whole numbers, float fields any number, bool fields true/false, optional fields
    also null. Returns a new dict with whole-number floats made ints.
    """
    types = {f.name: str(f.type) for f in fields(HParams)}
    _unknown_keys(where, hp, list(types))
    out = {}
    for key, v in hp.items():
        t = types[key]
        if v is None and "None" in t:
            out[key] = v
        elif key == "sigma_ema_tokens":  # a token count, or one per block kind (checked by validate)
            if isinstance(v, dict):
                out[key] = {str(k): _int_value(f"{where}.{key}.{k}", x) for k, x in v.items()}
            else:
                out[key] = _int_value(f"{where}.{key}", v)
        elif t.startswith("list"):  # keep_steps
            if not isinstance(v, (list, tuple)):
                raise ScheduleError(f"{where}.{key} must be a list of whole numbers, got {v!r}")
            out[key] = [_int_value(f"{where}.{key}", x) for x in v]
        elif t.startswith("int"):
            out[key] = _int_value(f"{where}.{key}", v)
        elif t.startswith("float"):
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ScheduleError(f"{where}.{key} must be a number, got {v!r}")
            out[key] = float(v)
        elif t.startswith("bool"):
            if not isinstance(v, bool):
                raise ScheduleError(f"{where}.{key} must be true or false, got {v!r}")
            out[key] = v
        elif t.startswith("tuple"):
            if not (isinstance(v, (list, tuple)) and all(isinstance(x, (int, float)) and not isinstance(x, bool)
                                                         for x in v)):
                raise ScheduleError(f"{where}.{key} must be a list of numbers, got {v!r}")
            out[key] = [float(x) for x in v]  # a list: config.yaml (yaml.safe_dump) has no tuples
        else:
            out[key] = v
    return out


def ema_summary(hp: HParams) -> str:
    """What the sigma_avg averaging does in one optimizer step, per block kind (1 process)."""
    if not hp.sigma_ema:
        return "sigma_avg per step: the step's own mean (no EMA)"
    unit = "per optimizer step" if hp.sigma_ema_tokens is None else f"per {hp.sigma_ema_tokens} tokens"
    kinds = ", ".join(f"{k} {hp.ema_per_step(k):.3g}" for k in ("mlp", "qk", "v", "f"))
    return (f"sigma_avg EMA {hp.sigma_ema} {unit}; effective factor per optimizer step "
            f"({hp.tokens_per_step:,} tokens): {kinds} (share of the old value kept)")


def _validate_ema_tokens(hp: HParams) -> None:
    t = hp.sigma_ema_tokens
    if t is None:
        return
    vals = t.values() if isinstance(t, dict) else [t]
    if isinstance(t, dict):
        bad = sorted(set(t) - set(GROUPS))
        if bad:
            raise ScheduleError(f"sigma_ema_tokens has unknown block kinds {bad}; use {list(GROUPS)}")
    if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in vals):
        raise ScheduleError(f"sigma_ema_tokens must be a positive token count or a mapping of block kind to "
                            f"one, got {t!r}")


def back_to_back_starts(n_layers: int, start_mlp: int, gaps: dict[str, int]) -> dict[str, int]:
    """Group starts when LN_MLP, LN_qk, LN_v and LN^f follow one another without a pause (the paper's schedules):
    start_qk = start_mlp + L * gap_mlp, start_v = start_qk + L * gap_qk, start_f = start_v + L * gap_v."""
    qk = start_mlp + n_layers * gaps["mlp"]
    v = qk + n_layers * gaps["qk"]
    return {"mlp": start_mlp, "qk": qk, "v": v, "f": v + n_layers * gaps["v"]}


def fit_schedule(n_layers: int, max_steps: int, hparams: HParams | None = None, name: str = "auto") -> Schedule:
    """Fit the paper's proportions into `n_layers` and `max_steps` (what `--schedule auto` does).

    The paper's schedules remove LN_MLP, LN_qk, LN_v with gaps in the ratio 2:2:3 (Small, Medium) or
    4:4:6 (Large, XL), start after ~5-7% of training, and leave the rest for recovery (GPT-2 Small
    ends removal at 35% of its steps). Here: start = 7% of max_steps (>= 1); the removal phase ends
    by ~50% of max_steps with unit u = (end - start) / (7 * n_layers) and gaps (2u, 2u, 3u) rounded
    down (>= 1). When even gaps of 1 do not fit, it raises ScheduleError saying how many steps are needed.
    """
    if n_layers < 1 or max_steps < 2:
        raise ScheduleError(f"need n_layers >= 1 and max_steps >= 2, got {n_layers}, {max_steps}")
    start = max(1, round(0.07 * max_steps))
    end = max(start + 3 * n_layers, round(0.5 * max_steps))
    unit = (end - start) / (7 * n_layers)
    g_mlp = g_qk = max(1, math.floor(2 * unit))
    g_v = max(1, math.floor(3 * unit))
    gaps = {"mlp": g_mlp, "qk": g_qk, "v": g_v}
    starts = back_to_back_starts(n_layers, start, gaps)
    if starts["f"] >= max_steps:
        need = 1 + 3 * n_layers + 1 + 1
        raise ScheduleError(
            f"{max_steps} steps are too few to remove the LNs of {n_layers} layers one at a time: "
            f"need at least {need} (3 groups x {n_layers} layers + LN^f + 1 step before and after)"
        )
    hp = HParams(**asdict(hparams)) if hparams is not None else HParams(mask_eot_labels=True)
    hp.max_steps = max_steps
    hp.warmup_steps = min(hp.warmup_steps, max(0, round(0.08 * max_steps)))
    return Schedule(n_layers=n_layers, starts=starts, gaps=gaps, hparams=hp, name=name)
