"""TrainConfig: everything that changes what a training run does, saved with the run as config.yaml.

A run directory's config.yaml alone says what happened and is enough to resume it: it holds the
resolved schedule (events and hyperparameters), the data and model sources, the seed, precision,
device choice and guard settings. There are no environment switches.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import yaml

from .method import presets
from .method.schedule import HParams, Schedule, ScheduleError, check_hparam_types

RESUME_PLACEHOLDER = "(from config.yaml)"  # TrainConfig.model of a bare `train --resume --out RUN`
DEVICE_RE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")

MODES = ("ln-free", "vanilla")
HPARAM_OVERRIDES = ("max_steps", "micro_batch_size", "grad_accum_steps", "seq_len", "lr", "min_lr",
                    "warmup_steps", "weight_decay", "aux_weight", "sigma_ema", "sigma_ema_tokens", "grad_clip",
                    "grad_checkpointing", "adam_betas", "mask_eot_labels", "weight_decay_fakeln_gain", "keep_steps")


class ConfigError(ValueError):
    """A training configuration that cannot run; the message says what to change."""


@dataclass
class TrainConfig:
    model: str  # Hub id, local HF folder, run directory, or demo model ("demo:original")
    out: str  # run directory
    dataset: str = "owt"  # registry name or local path
    schedule: str | dict = "gpt2"  # preset name, "auto", schedule file, or a resolved schedule dict
    mode: str = "ln-free"
    device: str = "auto"  # auto | cpu | cuda | cuda:N (under torchrun: the local rank's GPU)
    precision: str = "auto"  # auto: bf16 autocast on CUDA, fp32 on CPU | fp32 | bf16
    seed: int = 0
    shuffle: bool = False  # shuffle the training stream (seeded); the Hub's OWT is already shuffled
    save_every: int = 50  # checkpoint every K optimizer steps (and at the end)
    keep_checkpoints: int = 2  # newest checkpoints kept (older ones deleted once a newer one is safe)
    compile: bool = False  # torch.compile each transformer block
    attn_implementation: str = "sdpa"  # sdpa | eager
    grad_spike_factor: float = 10.0  # log a grad_spike event when grad norm > factor x running median
    stop_on_grad_spike: bool = False
    dropout: float | None = None  # training dropout for every dropout layer; None: as the model's config says
    distributed: str = "ddp"  # several processes (torchrun): ddp, or fsdp to shard weights/grads/AdamW states
    # Host reads of the step's values (loss, grad norm, sigmas) every K steps: between them the GPU runs
    # ahead of Python; rows are still written for every step (with the interval's mean tokens/s).
    log_every: int = 1
    overrides: dict = field(default_factory=dict)  # hyperparameters that replace the schedule's

    # ------------------------------------------------------------------ validation / resolution
    def validate(self) -> "TrainConfig":
        self._check_types()
        if not DEVICE_RE.fullmatch(self.device):
            raise ConfigError(f"device must be auto, cpu, cuda, cuda:N or mps; got {self.device!r}")
        if self.mode not in MODES:
            raise ConfigError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.precision not in ("auto", "fp32", "bf16"):
            raise ConfigError(f"precision must be auto, fp32 or bf16, got {self.precision!r}")
        if self.attn_implementation not in ("sdpa", "eager"):
            raise ConfigError(f"attn_implementation must be sdpa or eager, got {self.attn_implementation!r}")
        if self.dropout is not None and not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1) or null (the model's own), got {self.dropout}")
        if self.distributed not in ("ddp", "fsdp"):
            raise ConfigError(f"distributed must be ddp or fsdp, got {self.distributed!r}")
        if not isinstance(self.log_every, int) or self.log_every < 1:
            raise ConfigError(f"log_every must be an integer >= 1, got {self.log_every!r}")
        if self.save_every < 1 or self.keep_checkpoints < 1:
            raise ConfigError("save_every and keep_checkpoints must be >= 1")
        bad = sorted(set(self.overrides) - set(HPARAM_OVERRIDES))
        if bad:
            raise ConfigError(f"unknown hyperparameter overrides {bad}; allowed: {list(HPARAM_OVERRIDES)}")
        try:
            self.overrides = check_hparam_types(self.overrides, "overrides")
        except ScheduleError as e:
            raise ConfigError(str(e)) from None
        return self

    def _check_types(self) -> None:
        """Each setting has its declared type (a config file may hold "3" where 3 belongs)."""
        for f in fields(self):
            v, t = getattr(self, f.name), str(f.type)
            if v is None and "None" in t:
                continue
            ok = {"str": isinstance(v, str), "int": isinstance(v, int) and not isinstance(v, bool),
                  "bool": isinstance(v, bool), "dict": isinstance(v, dict),
                  "float": isinstance(v, (int, float)) and not isinstance(v, bool)}
            kind = t.split(" ")[0].split("[")[0]
            if kind == "str" and "dict" in t:  # schedule: a name/file or a resolved dict
                good = isinstance(v, (str, dict))
            else:
                good = ok.get(kind, True)
            if not good:
                raise ConfigError(f"config key {f.name!r} must be {t.replace('|', 'or')}, got {v!r}")

    def resolve_schedule(self, n_layers: int, context: int | None = None) -> Schedule:
        """The schedule with overrides applied, validated against the model's layer count.

        `context` (the model's position count): a preset's or auto's sequence length longer than it is
        cut to it (defaults follow the model); an explicit seq_len override longer than it is an error."""
        max_steps = self.overrides.get("max_steps")
        try:
            if isinstance(self.schedule, dict):
                sched = Schedule.from_dict(self.schedule)
            else:
                sched = presets.resolve_schedule(self.schedule, n_layers=n_layers, max_steps=max_steps)
            hp = asdict(sched.hparams)
            hp.update(check_hparam_types(self.overrides, "overrides"))
        except ScheduleError as e:
            raise ConfigError(f"schedule: {e}") from None
        hp["adam_betas"] = tuple(hp["adam_betas"])
        hp["keep_steps"] = sorted({int(x) for x in hp["keep_steps"] or []})
        if context is not None and hp["seq_len"] > context:
            if "seq_len" in self.overrides:
                raise ConfigError(f"seq_len {hp['seq_len']} is longer than the model's context ({context} positions); "
                                  f"use --seq-len {context} or less")
            hp["seq_len"] = context
        late = [k for k in hp["keep_steps"] if k > hp["max_steps"] or k < 1]
        if late and "keep_steps" in self.overrides:  # given by the user: a step the run never reaches is a typo
            raise ConfigError(f"keep_steps {late} are outside the run's steps 1..{hp['max_steps']}; give steps "
                              "the run reaches (or raise max_steps)")
        sched.hparams = HParams(**hp)
        if self.mode == "vanilla":
            # The paper's control: same data, steps and LR schedule; no removal, no aux loss.
            sched.n_layers = n_layers
            try:
                sched.validate()
            except ScheduleError as e:
                raise ConfigError(f"schedule: {e}") from None
            return sched
        try:
            return sched.validate(n_layers)
        except ScheduleError as e:
            raise ConfigError(f"schedule: {e}") from None

    # ------------------------------------------------------------------ files
    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            hints = [f"{k!r} (did you mean {c[0]!r}?)" if (c := difflib.get_close_matches(k, sorted(known), n=1))
                     else repr(k) for k in unknown]
            raise ConfigError(f"unknown config keys {', '.join(hints)}; known: {sorted(known)}")
        missing = [k for k in ("model", "out") if k not in d]
        if missing:
            raise ConfigError(f"config is missing {missing}")
        return cls(**d).validate()

    def save(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))

    @classmethod
    def load(cls, path: str | Path) -> "TrainConfig":
        path = Path(path)
        if not path.exists():
            raise ConfigError(f"config file {path} does not exist")
        data = yaml.safe_load(path.read_text()) or {}
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping of config keys")
        return cls.from_dict(data)
