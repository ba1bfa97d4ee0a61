"""Setting up a training run (the first half of train.py's `train`), one part per function.

In the order train() calls them:
  0. `claim_run_dir`: the run directory, made if needed, and its trainer.lock (rank 0),
  1. `resolve_config`: the config to run (validated; on --resume the saved one with the allowed changes),
  2. `pick_device`, `init_distributed`: where it runs (torchrun's environment: `dist_info`),
  3. `load_for_training`: the model, its family adapter and the resolved schedule, checked against the data,
  4. `restore_checkpoint`: on --resume the newest good checkpoint's weights, FakeLN state and data position,
  5. `place_model`: dropout, device, activation checkpointing, torch.compile, FSDP sharding,
  6. `open_feed`: the training micro-batches (`Batches`), read ahead by a Prefetcher.

A run that cannot start is refused with a ConfigError before any step; `fail_setup` leaves nothing behind
(a folder this call made) or says why in status.json.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from datetime import timedelta
from itertools import islice
from pathlib import Path

import numpy as np
import torch
from torch.distributed.fsdp import fully_shard

from .checkpoint import (checkpoint_dirs_any, load_model_weights, load_optimizer, newest_good_checkpoint,
                         read_checkpoint_meta, set_aside_corrupt, shared_aliases)
from .config import HPARAM_OVERRIDES, RESUME_PLACEHOLDER, ConfigError, TrainConfig
from .data.checks import DataModelMismatch, check_dataset_fits
from .data.model_fit import check_tokenizer_fit
from .data.registry import resolve_dataset
from .data.sources import iter_sequences
from .method.adapters import adapter_for
from .method.schedule import Schedule, ScheduleError
from .method.surgery import load_fakeln_state
from .models import load_model
from .rundir import STATUS_FILE, read_status, write_status
from .runlock import RunLocked, TrainerLock
from .step_sync import Prefetcher

# Settings that may change when a run is resumed: where and how fast it runs, not what it computes.
SAFE_ON_RESUME = ("device", "save_every", "keep_checkpoints", "compile", "grad_checkpointing", "distributed",
                  "log_every")


class RunExists(ConfigError):
    pass


# ---------------------------------------------------------------------------------------- the config
def claim_run_dir(out: Path) -> tuple[TrainerLock, bool]:
    """Make the run directory (rank 0) and take its trainer.lock: a second trainer on the same run is
    refused (ConfigError), a dead one's lock is taken over. Returns (the lock, whether this call made
    the folder); a folder made here is removed again when the lock is refused."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file, not a directory: choose a folder for the run")
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"cannot create the run directory {out}: {e}") from None
    try:
        return TrainerLock(out).acquire(), created
    except RunLocked as e:
        if created:
            shutil.rmtree(out, ignore_errors=True)
        raise ConfigError(str(e)) from None


def check_run_dir(out: Path, resume: bool) -> None:
    """A new run needs an empty folder; a resumed one needs the config.yaml of the run it continues."""
    if resume:
        if not (out / "config.yaml").exists():
            raise ConfigError(f"cannot resume: {out} has no config.yaml (was a run started there?)")
        return
    if (out / "metrics.jsonl").exists() or (out / "checkpoints").exists() or (out / "config.yaml").exists():
        raise RunExists(
            f"run directory {out} already holds a run; pass --resume to continue it, or choose another --out"
        )


def apply_resume_changes(saved: TrainConfig, changes: dict) -> list[str]:
    """Apply the flags given with --resume to the saved config; refuse those that would change the run.

    Returns the applied changes as "key: old -> new". A flag equal to the saved value is accepted.
    """
    hp = (saved.schedule or {}).get("hparams", {}) if isinstance(saved.schedule, dict) else {}
    applied, refused = [], []
    for key, val in changes.items():
        if key in ("out", "overrides"):
            continue
        if key in HPARAM_OVERRIDES:
            old = hp.get(key)
        elif key == "schedule":
            old = saved.schedule.get("name") if isinstance(saved.schedule, dict) else saved.schedule
        else:
            old = getattr(saved, key, None)
        if val == old or (key == "model" and old is not None and _same_source(val, old)):
            continue
        if key == "schedule" and isinstance(saved.schedule, dict) and _same_schedule_file(val, saved.schedule):
            continue
        if key in SAFE_ON_RESUME:
            if key in HPARAM_OVERRIDES:
                saved.schedule["hparams"][key] = val
            else:
                setattr(saved, key, val)
            applied.append(f"{key}: {old} -> {val}")
        else:
            refused.append(f"{key} (saved {old!r}, given {val!r})")
    if refused:
        raise ConfigError(
            "--resume continues the run exactly as it was configured; these flags would change it: "
            + "; ".join(refused) + ". Drop them to resume, or start a new run (another --out) with the new "
            f"settings. Flags that may change on resume: {', '.join('--' + k.replace('_', '-') for k in SAFE_ON_RESUME)}."
        )
    return applied


def _same_schedule_file(path: str, saved: dict) -> bool:
    try:
        d = Schedule.load(path).to_dict() if Path(str(path)).is_file() else None
    except (OSError, ValueError, ScheduleError):
        return False
    return d is not None and all(d[k] == saved.get(k) for k in ("starts", "gaps", "order", "n_layers"))


def _same_source(a: str, b: str) -> bool:
    pa, pb = Path(str(a)), Path(str(b))
    return pa.exists() and pb.exists() and pa.resolve() == pb.resolve()


def fail_setup(out: Path, created: bool, reason: str, started: float) -> None:
    """A run that cannot start: leave nothing behind (a folder this call made) or say why in status.json."""
    if created:  # made by this call moments ago and locked since: everything in it is ours
        shutil.rmtree(out, ignore_errors=True)
        return
    if out.is_dir():
        write_status(out, state="failed", step=0, max_steps=None, pid=os.getpid(), reason=reason, started=started)


def resolve_config(cfg: TrainConfig, resume: bool, resume_changes: dict, out: Path, *, created: bool, rank: int,
                   started: float, notes: list[str]) -> tuple[TrainConfig, bool]:
    """The config this run executes, and whether it resumes: `cfg` validated for a new run; on --resume
    the saved config.yaml with `resume_changes` applied (and saved), or `cfg` afresh when the run never
    got past start-up. Appends what it did to `notes`.

    Refused (ConfigError) before any work: a folder made by this call goes; an existing run is left as it
    was (its status is not rewritten); a folder prepared by jobs/ (no status yet) says why."""
    try:
        if resume and not (out / "config.yaml").exists() and not checkpoint_dirs_any(out) and cfg.model != RESUME_PLACEHOLDER:
            # Interrupted during start-up (no config.yaml, no checkpoint): nothing to continue, start it.
            notes.append("the run had not got past start-up (no config.yaml, no checkpoint): starting it afresh")
            cfg.validate()
            return cfg, False
        if resume:
            check_run_dir(out, True)
            saved = TrainConfig.load(out / "config.yaml")
            saved.out = cfg.out
            applied = apply_resume_changes(saved, resume_changes)
            if applied:
                notes.append("changed on resume: " + "; ".join(applied))
                if rank == 0:
                    saved.save(out / "config.yaml")
            return saved, True
        cfg.validate()
        check_run_dir(out, False)
        return cfg, False
    except ConfigError as e:
        if rank == 0 and (created or not (out / STATUS_FILE).exists()):
            fail_setup(out, created, str(e), started)
        raise


def mark_starting(out: Path, resume: bool, started: float) -> None:
    """status.json says "starting" (keeping a resumed run's step and max_steps): from here on the folder is
    a listed run, "starting" until the first step, or failed with a reason."""
    prev = (read_status(out) or {}) if resume else {}
    prev = {k: v for k, v in prev.items() if k in ("step", "max_steps") and isinstance(v, int)}
    write_status(out, state="starting", step=prev.get("step", 0), max_steps=prev.get("max_steps"),
                 pid=os.getpid(), reason=None, started=started)


# ---------------------------------------------------------------------------------------- the device
def dist_info() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment protocol (1 process otherwise)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        return int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0"))
    return 0, 1, 0


def pick_device(spec: str, local_rank: int, world: int) -> torch.device:
    """The device named by `spec` (auto: CUDA when visible, else CPU); under torchrun, GPU `local_rank`."""
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(spec)
    except RuntimeError:
        raise ConfigError(f"unknown device {spec!r}: use auto, cpu, cuda, cuda:N or mps") from None
    if dev.type == "cuda" and dev.index is not None and torch.cuda.is_available() and dev.index >= torch.cuda.device_count():
        raise ConfigError(f"device {spec} does not exist: {torch.cuda.device_count()} CUDA GPU(s) are visible "
                          f"(cuda:0..cuda:{torch.cuda.device_count() - 1})")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("device cuda was asked for but no CUDA GPU is visible; use --device cpu")
        if world > 1 or dev.index is None:
            dev = torch.device("cuda", local_rank if world > 1 else (dev.index or 0))
        torch.cuda.set_device(dev)
    return dev


def init_distributed(device: torch.device, world: int) -> None:
    """The process group of a torchrun launch (nccl on CUDA, gloo otherwise); nothing for one process."""
    if world > 1 and not torch.distributed.is_initialized():
        # Generous timeout: ranks wait in a collective while rank 0 writes a large checkpoint.
        torch.distributed.init_process_group(backend="nccl" if device.type == "cuda" else "gloo",
                                             timeout=timedelta(minutes=60))


def rng_state(device: torch.device) -> dict:
    st = {"torch": torch.get_rng_state().tolist()}
    if device.type == "cuda":
        st["cuda"] = torch.cuda.get_rng_state(device).tolist()
    return st


def set_rng_state(st: dict, device: torch.device) -> None:
    torch.set_rng_state(torch.tensor(st["torch"], dtype=torch.uint8))
    if device.type == "cuda" and "cuda" in st:
        torch.cuda.set_rng_state(torch.tensor(st["cuda"], dtype=torch.uint8), device)


# ---------------------------------------------------------------------------------------- the model
def check_model_fits(cfg: TrainConfig, model, hp) -> None:
    """Data and sequence length against the model: a clear message now instead of an IndexError later."""
    positions = getattr(model.config, "n_positions", None) or getattr(model.config, "max_position_embeddings", None)
    if positions is not None and hp.seq_len > int(positions):
        raise ConfigError(f"--seq-len {hp.seq_len} is longer than the model's {positions} positions: use "
                          f"--seq-len {positions} or less")
    try:
        check_dataset_fits(cfg.dataset, model.get_input_embeddings().num_embeddings)
    except DataModelMismatch as e:
        raise ConfigError(str(e)) from None


def load_for_training(cfg: TrainConfig, *, out: Path, created: bool, rank: int, started: float):
    """(model on the CPU, its family adapter, the schedule resolved for its depth and context), after
    checking the dataset and sequence length fit the model. A bad model, schedule or dataset is a
    ConfigError that says which, in status.json too (`created`: this call made `out`)."""
    try:
        model = load_model(cfg.model, device="cpu", attn_implementation=cfg.attn_implementation).model
        adapter = adapter_for(model)
        context = next((v for v in (getattr(model.config, k, None) for k in ("n_positions", "max_position_embeddings"))
                        if isinstance(v, int) and v > 0), None)
        sched = cfg.resolve_schedule(adapter.n_layers(model), context)
        resolve_dataset(cfg.dataset)
        check_tokenizer_fit(adapter.model_type, cfg.dataset)
        check_model_fits(cfg, model, sched.hparams)
    except Exception as e:  # bad model / schedule / dataset: say so, in status.json too
        reason = str(e) if isinstance(e, ConfigError) else f"{type(e).__name__}: {e}"
        if not isinstance(e, ConfigError):
            reason = f"cannot set up the run (model {cfg.model!r}, dataset {cfg.dataset!r}): {reason}"
        if rank == 0:
            fail_setup(out, created, reason, started)
        raise ConfigError(reason) from e
    return model, adapter, sched


@dataclass
class Restored:
    """Where a resumed run continues: the checkpoint (None: from the start) and its training state."""

    ckpt: Path | None = None
    step: int = 0
    epoch: int = 0
    pos: int = 0
    tokens: int = 0
    history: list[float] = field(default_factory=list)  # recent gradient norms (the grad-spike guard)
    optimizer_meta: dict | None = None
    rng: dict | None = None


def restore_checkpoint(model: torch.nn.Module, out: Path, resume: bool, rank: int, notes: list[str]) -> Restored:
    """On resume, load the newest good checkpoint's weights and FakeLN state into `model` (on the CPU,
    after the surgery) and return where the run stands; corrupt newer checkpoints are skipped, said in
    `notes` and (rank 0) renamed aside. Every rank verifies the same files and so picks the same one."""
    if not resume:
        return Restored()
    good = newest_good_checkpoint(out)
    if good.skipped:
        notes.append(good.warning())
        if rank == 0:
            moved = [set_aside_corrupt(p).name for p, _ in good.skipped]
            notes.append(f"the corrupt checkpoint(s) were renamed to {', '.join(moved)} (never loaded; "
                         "delete them once inspected)")
    if good.path is None:
        return Restored()
    fake, state = read_checkpoint_meta(good.path)
    load_model_weights(model, good.path)
    if fake:
        load_fakeln_state(model, fake)
    return Restored(good.path, state["step"], state["epoch"], state["pos"], state["tokens"],
                    state.get("grad_norm_history", []), state.get("optimizer_meta"), state.get("rng"))


def restore_optimizer(optimizer: torch.optim.Optimizer, model: torch.nn.Module, restored: Restored,
                      device: torch.device) -> None:
    """The checkpoint's optimizer state and RNG state (a checkpoint written with its optimizer only)."""
    if restored.ckpt is not None and restored.optimizer_meta is not None:
        load_optimizer(optimizer, model, restored.ckpt, restored.optimizer_meta)
        set_rng_state(restored.rng, device)


def set_dropout(model: torch.nn.Module, p: float) -> None:
    """Every dropout layer (and the config, so that checkpoints and exports record it) to probability p."""
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = p
    for key in ("resid_pdrop", "embd_pdrop", "attn_pdrop", "attention_dropout", "hidden_dropout"):
        if hasattr(model.config, key):
            setattr(model.config, key, p)


def enable_checkpointing(model: torch.nn.Module) -> None:
    """Per-block activation checkpointing (non-reentrant); it stays on after the FakeLN surgery."""
    enable = getattr(model, "activation_checkpointing_enable", None)
    if enable is not None:  # transformers >= 5.x name
        enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def place_model(model: torch.nn.Module, adapter, cfg: TrainConfig, hp, device: torch.device, fsdp: bool) -> dict:
    """Dropout, the device, train mode, activation checkpointing, per-block torch.compile, and (FSDP)
    sharding of each block and then the rest (embeddings, LN^f, tied head) across the ranks.

    Returns the model's shared-parameter aliases (checkpoint.shared_aliases), taken on the placed model
    before sharding."""
    if cfg.dropout is not None:
        set_dropout(model, cfg.dropout)
    model.to(device)
    model.train()
    if hp.grad_checkpointing:
        enable_checkpointing(model)
    if cfg.compile:
        for block in adapter.blocks(model):  # per block: a removal recompiles only its block
            block.compile()
    aliases = shared_aliases(model)  # before sharding: which parameter names are the same tensor
    if fsdp:
        for block in adapter.blocks(model):
            fully_shard(block)
        fully_shard(model)
    return aliases


def wrap_ddp(model: torch.nn.Module, device: torch.device, world: int, fsdp: bool) -> torch.nn.Module:
    """The module the forward runs through: DistributedDataParallel over several ranks (not FSDP)."""
    if world > 1 and not fsdp:
        return torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    return model


# ---------------------------------------------------------------------------------------- the data
class Batches:
    """Global micro-batches of seq_len sequences; rank r takes rows [r*B, (r+1)*B). Epochs wrap around."""

    def __init__(self, cfg: TrainConfig, seq_len: int, micro_bs: int, rank: int, world: int,
                 epoch: int = 0, pos: int = 0):
        self.cfg, self.seq_len, self.bs, self.rank, self.world = cfg, seq_len, micro_bs, rank, world
        self.epoch, self.pos = epoch, pos
        self._it = self._open()

    def _open(self):
        return iter_sequences(self.cfg.dataset, split="train", seq_len=self.seq_len, skip=self.pos,
                              shuffle=self.cfg.shuffle, seed=self.cfg.seed + self.epoch)

    def next(self) -> np.ndarray:  # [micro_bs, seq_len]
        n = self.bs * self.world
        rows = list(islice(self._it, n))
        if len(rows) < n:
            if self.pos == 0 and not rows:
                raise ConfigError(f"dataset {self.cfg.dataset!r} yields no training sequences of {self.seq_len} tokens")
            self.epoch, self.pos = self.epoch + 1, 0
            self._it = self._open()
            rows = list(islice(self._it, n))
            if len(rows) < n:
                raise ConfigError(
                    f"dataset {self.cfg.dataset!r} has fewer than {n} training sequences of {self.seq_len} "
                    "tokens: lower the micro batch size or the sequence length"
                )
        self.pos += n
        return np.stack(rows[self.rank * self.bs:(self.rank + 1) * self.bs])


def open_feed(cfg: TrainConfig, hp, rank: int, world: int, restored: Restored, device: torch.device,
              log) -> Prefetcher:
    """The training micro-batches from where `restored` stands, read ahead (pinned on CUDA); feed.epoch /
    feed.pos say what was consumed. Unreadable data is a ConfigError, said in status.json (rank 0)."""
    try:
        batches = Batches(cfg, hp.seq_len, hp.micro_batch_size, rank, world, restored.epoch, restored.pos)
    except Exception as e:
        reason = f"cannot read training data from {cfg.dataset!r}: {e}"
        if log:
            log.status("failed", restored.step, reason)
        raise ConfigError(reason) from e
    return Prefetcher(batches, pin=device.type == "cuda")
