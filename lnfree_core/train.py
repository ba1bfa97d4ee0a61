"""The fine-tuning loop: LN removal by FakeLN (paper section 3) or the vanilla control.

One optimizer step (1-based step t, after t-1 steps done):
  1. apply the removal events scheduled at step t-1 (sigma_bar := tracked sigma_avg),
  2. for each of the grad_accum_steps micro-batches: forward (bf16 autocast on CUDA), loss =
     CE + aux (eq. 3, LN-removal only), backward, commit the FakeLN statistics of the micro-batch;
     CE leaves out end-of-text targets when `mask_eot_labels` (as the reference's collator did),
  3. reduce over ranks, check the loss and gradient norm are finite (else stop: never train on NaN),
     clip, AdamW step with the step's LR, update every live block's sigma_avg once,
  4. log a metrics line; checkpoint every save_every steps, at the end and when cancelled.

The step's values stay on the device (lnfree_core.step_sync): with an optimizer that can skip its
update on a device flag (fused AdamW, CUDA) the host reads them every `log_every` steps (and before
checkpoints and removal events), a non-finite step's update being skipped on the device until then;
otherwise they are read every step, before the update.

Single process: `python -m lnfree_core train ...`; several GPUs: `torchrun --nproc_per_node N -m
lnfree_core train ...` (DDP, or FSDP with `distributed: fsdp`; each rank reads its slice of every
global micro-batch, so the data order does not depend on the number of processes). Checkpoints hold
full gathered weights and optimizer states, whatever the strategy.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import statistics
import sys
import time
from dataclasses import dataclass
from datetime import timedelta
from itertools import islice
from pathlib import Path

import numpy as np
import torch

from .checkpoint import (checkpoint_dirs_any, gather_state, load_model_weights, load_optimizer, newest_good_checkpoint,
                         read_checkpoint_meta, remove_partial_checkpoints, save_checkpoint, set_aside_corrupt,
                         shared_aliases)
from .config import HPARAM_OVERRIDES, RESUME_PLACEHOLDER, ConfigError, TrainConfig
from .data.checks import DataModelMismatch, check_batch, check_dataset_fits
from .data.model_fit import check_tokenizer_fit
from .method.aux_loss import aux_loss
from .method.surgery import fakeln_modules, fakeln_state, load_fakeln_state, make_removable, remove_block
from .method.tracking import SigmaTracker
from .models import load_model
from .optim import lr_at, make_optimizer
from .rundir import STATUS_FILE, RunLog, read_status, write_status
from .runlock import RunLocked, TrainerLock
from .step_sync import AUX, BAD, GNORM, MAIN, Prefetcher, StepRecords, supports_found_inf
from .throughput import Throughput, model_flops_per_token

GRAD_SPIKE_ADVICE = (
    "Paper appendix B.1: a loss spike right after a removal event usually means the schedule is too "
    "aggressive: increase the gaps between removal events in that group. Failures during the LN_qk "
    "phase: watch the sigma values, adjust the sigma EMA factor, the learning rate or the aux loss weight."
)
NONFINITE_ADVICE = (
    "The loss or gradient became non-finite; the optimizer step was not taken and the run stopped. "
    + GRAD_SPIKE_ADVICE
    + " Resume from the last checkpoint with a gentler schedule (a new run directory with a changed config)."
)


class RunExists(ConfigError):
    pass


@dataclass
class TrainResult:
    state: str  # finished | failed | cancelled
    step: int
    reason: str | None = None


# ---------------------------------------------------------------------------------------- setup
def _dist_info() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment protocol (1 process otherwise)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        return int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0"))
    return 0, 1, 0


def _pick_device(spec: str, local_rank: int, world: int) -> torch.device:
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


def _autocast(device: torch.device, precision: str):
    if precision == "bf16" or (precision == "auto" and device.type == "cuda"):
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _check_run_dir(out: Path, resume: bool) -> None:
    if resume:
        if not (out / "config.yaml").exists():
            raise ConfigError(f"cannot resume: {out} has no config.yaml (was a run started there?)")
        return
    if (out / "metrics.jsonl").exists() or (out / "checkpoints").exists() or (out / "config.yaml").exists():
        raise RunExists(
            f"run directory {out} already holds a run; pass --resume to continue it, or choose another --out"
        )


# Settings that may change when a run is resumed: where and how fast it runs, not what it computes.
SAFE_ON_RESUME = ("device", "save_every", "keep_checkpoints", "compile", "grad_checkpointing", "distributed",
                  "log_every")


def _apply_resume_changes(saved: TrainConfig, changes: dict) -> list[str]:
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
    from .method.schedule import Schedule, ScheduleError

    try:
        d = Schedule.load(path).to_dict() if Path(str(path)).is_file() else None
    except (OSError, ValueError, ScheduleError):
        return False
    return d is not None and all(d[k] == saved.get(k) for k in ("starts", "gaps", "order", "n_layers"))


def _same_source(a: str, b: str) -> bool:
    pa, pb = Path(str(a)), Path(str(b))
    return pa.exists() and pb.exists() and pa.resolve() == pb.resolve()


def _check_model_fits(cfg: TrainConfig, model, hp) -> None:
    """Data and sequence length against the model: a clear message now instead of an IndexError later."""
    positions = getattr(model.config, "n_positions", None) or getattr(model.config, "max_position_embeddings", None)
    if positions is not None and hp.seq_len > int(positions):
        raise ConfigError(f"--seq-len {hp.seq_len} is longer than the model's {positions} positions: use "
                          f"--seq-len {positions} or less")
    try:
        check_dataset_fits(cfg.dataset, model.get_input_embeddings().num_embeddings)
    except DataModelMismatch as e:
        raise ConfigError(str(e)) from None


class _Batches:
    """Global micro-batches of seq_len sequences; rank r takes rows [r*B, (r+1)*B). Epochs wrap around."""

    def __init__(self, cfg: TrainConfig, seq_len: int, micro_bs: int, rank: int, world: int,
                 epoch: int = 0, pos: int = 0):
        from .data.sources import iter_sequences

        self._iter_sequences = iter_sequences
        self.cfg, self.seq_len, self.bs, self.rank, self.world = cfg, seq_len, micro_bs, rank, world
        self.epoch, self.pos = epoch, pos
        self._it = self._open()

    def _open(self):
        return self._iter_sequences(self.cfg.dataset, split="train", seq_len=self.seq_len, skip=self.pos,
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


def _rng_state(device: torch.device) -> dict:
    st = {"torch": torch.get_rng_state().tolist()}
    if device.type == "cuda":
        st["cuda"] = torch.cuda.get_rng_state(device).tolist()
    return st


def _set_rng_state(st: dict, device: torch.device) -> None:
    torch.set_rng_state(torch.tensor(st["torch"], dtype=torch.uint8))
    if device.type == "cuda" and "cuda" in st:
        torch.cuda.set_rng_state(torch.tensor(st["cuda"], dtype=torch.uint8), device)


# ---------------------------------------------------------------------------------------- train
def train(cfg: TrainConfig, resume: bool = False, resume_changes: dict | None = None) -> TrainResult:
    """Run (or resume) a training run described by `cfg`. Returns how it ended.

    The process (rank 0) holds RUN_DIR/trainer.lock while it runs: a second trainer on the same run
    is refused (ConfigError), a dead one's lock is taken over. `resume_changes`: the settings given
    explicitly with --resume (see SAFE_ON_RESUME; others must equal the saved ones).
    """
    rank, world, _local_rank = _dist_info()
    out = Path(cfg.out)
    lock, created = None, False
    if rank == 0:
        if out.exists() and not out.is_dir():
            raise ConfigError(f"--out {out} is a file, not a directory: choose a folder for the run")
        created = not out.exists()
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ConfigError(f"cannot create the run directory {out}: {e}") from None
        try:
            lock = TrainerLock(out).acquire()
        except RunLocked as e:
            if created:
                shutil.rmtree(out, ignore_errors=True)
            raise ConfigError(str(e)) from None
    try:
        return _train_locked(cfg, resume, resume_changes or {}, out, created)
    finally:
        if lock is not None:
            lock.release()


def _fail_setup(out: Path, created: bool, reason: str, started: float) -> None:
    """A run that cannot start: leave nothing behind (a folder this call made) or say why in status.json."""
    if created:  # made by this call moments ago and locked since: everything in it is ours
        shutil.rmtree(out, ignore_errors=True)
        return
    if out.is_dir():
        write_status(out, state="failed", step=0, max_steps=None, pid=os.getpid(), reason=reason, started=started)


def _read_status(out: Path) -> dict:
    st = read_status(out) or {}
    return {k: v for k, v in st.items() if k in ("step", "max_steps") and isinstance(v, int)}


def _train_locked(cfg: TrainConfig, resume: bool, resume_changes: dict, out: Path, created: bool) -> TrainResult:
    rank, world, local_rank = _dist_info()
    started = time.time()
    notes: list[str] = []  # said on stdout and in the "resumed"/"started" event
    if rank == 0:
        removed = remove_partial_checkpoints(out)
        if removed:
            notes.append(f"removed {len(removed)} half-written checkpoint folder(s) of an interrupted save: "
                         + ", ".join(removed))
    try:
        if resume and not (out / "config.yaml").exists() and not checkpoint_dirs_any(out) and cfg.model != RESUME_PLACEHOLDER:
            # Interrupted during start-up (no config.yaml, no checkpoint): nothing to continue, start it.
            notes.append("the run had not got past start-up (no config.yaml, no checkpoint): starting it afresh")
            resume = False
            cfg.validate()
        elif resume:
            _check_run_dir(out, True)
            saved = TrainConfig.load(out / "config.yaml")
            saved.out = cfg.out
            applied = _apply_resume_changes(saved, resume_changes)
            if applied:
                notes.append("changed on resume: " + "; ".join(applied))
                if rank == 0:
                    saved.save(out / "config.yaml")
            cfg = saved
        else:
            cfg.validate()
            _check_run_dir(out, False)
    except ConfigError as e:
        # Refused before any work: a folder made by this call goes; an existing run is left as it was
        # (its status is not rewritten); a folder prepared by jobs/ (no status yet) says why.
        if rank == 0 and (created or not (out / STATUS_FILE).exists()):
            _fail_setup(out, created, str(e), started)
        raise
    if rank == 0:
        # From here on the folder is a listed run: "starting" until the first step, or failed with a reason.
        prev = _read_status(out) if resume else {}
        write_status(out, state="starting", step=prev.get("step", 0), max_steps=prev.get("max_steps"),
                     pid=os.getpid(), reason=None, started=started)
    try:
        device = _pick_device(cfg.device, local_rank, world)
    except ConfigError as e:
        if rank == 0:
            _fail_setup(out, False, str(e), started)
        raise
    if world > 1 and not torch.distributed.is_initialized():
        # Generous timeout: ranks wait in a collective while rank 0 writes a large checkpoint.
        torch.distributed.init_process_group(backend="nccl" if device.type == "cuda" else "gloo",
                                             timeout=timedelta(minutes=60))

    torch.manual_seed(cfg.seed)
    from .method.adapters import adapter_for

    try:
        loaded = load_model(cfg.model, device="cpu", attn_implementation=cfg.attn_implementation)
        model = loaded.model
        adapter = adapter_for(model)
        n_layers = adapter.n_layers(model)
        context = next((v for v in (getattr(model.config, k, None) for k in ("n_positions", "max_position_embeddings"))
                        if isinstance(v, int) and v > 0), None)
        sched = cfg.resolve_schedule(n_layers, context)
        from .data.registry import resolve_dataset

        resolve_dataset(cfg.dataset)
        check_tokenizer_fit(adapter.model_type, cfg.dataset)
        _check_model_fits(cfg, model, sched.hparams)
    except Exception as e:  # bad model / schedule / dataset: say so, in status.json too
        reason = str(e) if isinstance(e, ConfigError) else f"{type(e).__name__}: {e}"
        if not isinstance(e, ConfigError):
            reason = f"cannot set up the run (model {cfg.model!r}, dataset {cfg.dataset!r}): {reason}"
        if rank == 0:
            _fail_setup(out, created and not resume, reason, started)
        raise ConfigError(reason) from e
    hp = sched.hparams
    vocab = model.get_input_embeddings().num_embeddings
    ln_free = cfg.mode == "ln-free"
    if ln_free:
        make_removable(model)
        fakeln_modules(model)["f"].capture_std = True
    eot = adapter.eot_id(model)

    if rank == 0:
        if not resume:
            resolved = TrainConfig(**{**cfg.to_dict(), "schedule": sched.to_dict(), "overrides": {}})
            resolved.save(out / "config.yaml")
    log = RunLog(out, hp.max_steps) if rank == 0 else None
    if log is not None and log.repaired:
        notes.append("repaired a half-written last line of metrics.jsonl (left by a killed trainer)")

    done, epoch, pos, tokens_seen, spikes, history = 0, 0, 0, 0, 0, []
    ckpt = None
    if resume:  # every rank verifies the same files and so picks the same checkpoint
        good = newest_good_checkpoint(out)
        ckpt = good.path
        if good.skipped:
            notes.append(good.warning())
            if rank == 0:
                moved = [set_aside_corrupt(p).name for p, _ in good.skipped]
                notes.append(f"the corrupt checkpoint(s) were renamed to {', '.join(moved)} (never loaded; "
                             "delete them once inspected)")
    optimizer_meta = None
    if ckpt is not None:
        fake, state = read_checkpoint_meta(ckpt)
        load_model_weights(model, ckpt)
        if fake:
            load_fakeln_state(model, fake)
        done, epoch, pos = state["step"], state["epoch"], state["pos"]
        tokens_seen, history = state["tokens"], state.get("grad_norm_history", [])
        optimizer_meta = state.get("optimizer_meta")
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
    fsdp = world > 1 and cfg.distributed == "fsdp"
    if fsdp:  # shard each block, then the rest (embeddings, LN^f, tied head), across the ranks
        from torch.distributed.fsdp import fully_shard

        for block in adapter.blocks(model):
            fully_shard(block)
        fully_shard(model)
    tracker = SigmaTracker(model, hp.sigma_ema, hp.sigma_ema_tokens) if ln_free else None
    optimizer = make_optimizer(model, hp.lr, hp.weight_decay, hp.adam_betas,
                               decay_fakeln_gain=ln_free and hp.weight_decay_fakeln_gain)
    if ckpt is not None and optimizer_meta is not None:
        load_optimizer(optimizer, model, ckpt, optimizer_meta)
        _set_rng_state(read_checkpoint_meta(ckpt)[1]["rng"], device)
    ddp = model
    if world > 1 and not fsdp:
        ddp = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    try:
        batches = _Batches(cfg, hp.seq_len, hp.micro_batch_size, rank, world, epoch, pos)
    except Exception as e:
        reason = f"cannot read training data from {cfg.dataset!r}: {e}"
        if log:
            log.status("failed", done, reason)
        raise ConfigError(reason) from e
    feed = Prefetcher(batches, pin=device.type == "cuda")  # reads ahead; feed.epoch/pos: what was consumed
    events = [e for e in sched.events()] if ln_free else []
    stop = {"signal": None}

    def _on_signal(signum, _frame):
        stop["signal"] = signum

    old_handlers = {s: signal.signal(s, _on_signal) for s in (signal.SIGTERM, signal.SIGINT)}

    checkpointer = Checkpointer(out, model, optimizer, log, rank, fsdp, ln_free, device, aliases,
                                keep=cfg.keep_checkpoints, protect=hp.keep_steps)

    def checkpoint(step: int) -> None:
        checkpointer.save(step, epoch=feed.epoch, pos=feed.pos, tokens=tokens_seen, history=history)

    perf = Throughput(model_flops_per_token(model, hp.seq_len), device, world)
    # Deferred host reads need an optimizer that skips its update on a device flag (fused AdamW; not
    # used with FSDP's sharded parameters); a grad-spike stop must act at the spike's own step: all
    # else reads every step.
    records = StepRecords(device, deferred=supports_found_inf(optimizer) and not cfg.stop_on_grad_spike and not fsdp)
    if log:
        for note in notes:
            print(note, file=sys.stderr if note.startswith("warning") else sys.stdout, flush=True)
        if resume:
            log.event("resumed", done, message=f"resumed from {ckpt.name if ckpt else 'the start (no usable checkpoint)'}"
                      + "".join(f"; {n}" for n in notes))
        elif notes:
            log.event("started", done, message="; ".join(notes))
        log.event("throughput", done, message=_throughput_message(perf), **perf.describe(),
                  host_reads_every=cfg.log_every if records.deferred else 1)
        log.status("running", done)
    result = TrainResult("finished", done)
    try:
        while done < hp.max_steps:
            due = [e for e in events if e.step == done]
            if due and len(records):  # a removal reads sigma_avg: settle the pending steps first
                failed = _settle(records, log, perf, history, cfg, hp, done, tracker)
                if failed is not None:
                    result = failed
                    break
            apply_removals(model, due, done, log)
            if due:
                records.restart_clock()
            lr = lr_at(done, hp.lr, hp.min_lr, hp.warmup_steps, hp.max_steps)
            for g in optimizer.param_groups:
                g["lr"] = lr
            sums = accumulate_gradients(ddp, model, feed, cfg, hp, device, vocab=vocab, eot=eot, tracker=tracker,
                                        ln_free=ln_free, fsdp=fsdp, world=world, step=done + 1)
            # A signal (cancel) seen by any rank stops every rank after this same step.
            if stop["signal"] is not None:
                sums[2] = 1.0
            if world > 1:
                torch.distributed.all_reduce(sums)
                sums[:2] /= world
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), hp.grad_clip if hp.grad_clip > 0 else float("inf"))
            gn_t = grad_norm.full_tensor() if hasattr(grad_norm, "full_tensor") else grad_norm
            vals = records.values(sums, hp.grad_accum_steps, gn_t)  # [main, aux, grad norm, stop, non-finite]
            step_tokens = hp.micro_batch_size * hp.seq_len * hp.grad_accum_steps * world
            if not records.deferred:  # read now, before the update: never train on NaN
                failed = _nonfinite_now(vals, done + 1, log)
                if failed is not None:
                    optimizer.zero_grad(set_to_none=True)
                    result = failed
                    break
            else:  # the update is skipped on the device if this (or an earlier) step was non-finite
                optimizer.found_inf = records.skip_flag(vals)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if tracker:
                tracker.end_step()
            done += 1
            tokens_seen += step_tokens
            records.add(done, lr, tokens_seen, torch.cat([vals, tracker.sigma_vector()]) if tracker else vals)
            if not records.deferred or (
                    done % cfg.log_every == 0 or done % cfg.save_every == 0 or done == hp.max_steps
                    or (world == 1 and stop["signal"] is not None)):
                failed = _settle(records, log, perf, history, cfg, hp, done, tracker)
                if failed is not None:
                    result = failed
                    break
            if records.stopped:
                checkpoint(done)
                sig = signal.Signals(stop["signal"]).name if stop["signal"] is not None else "SIGTERM (on another rank)"
                result = TrainResult("cancelled", done, f"cancelled by signal {sig}")
                break
            if records.spike_stop is not None:
                checkpoint(done)
                result = TrainResult("failed", done, records.spike_stop)
                break
            if done % cfg.save_every == 0 or done == hp.max_steps or done in hp.keep_steps:
                checkpoint(done)
                records.restart_clock()
                if world == 1 and stop["signal"] is not None and done < hp.max_steps:
                    # cancelled while this checkpoint was written: it is the last one, stop now
                    sig = signal.Signals(stop["signal"]).name
                    result = TrainResult("cancelled", done, f"cancelled by signal {sig}")
                    break
        else:
            result = TrainResult("finished", done)
            if ln_free and rank == 0:
                live = [n for n, m in fakeln_modules(model).items() if not m.is_removed]
                if live:
                    result.reason = f"finished with {len(live)} live LN blocks (schedule ended early): {live[:4]}"
    except BaseException as e:  # a crash keeps its checkpoints and metrics and says why
        reason = f"{type(e).__name__}: {e}"
        if log:
            try:
                log.status("failed", done, reason)
                log.close()
            except OSError:  # e.g. the disk is full: jobs/ then reports the dead process itself
                pass
        raise
    finally:
        feed.close()
        for s, h in old_handlers.items():
            signal.signal(s, h)
    if log:
        log.status(result.state, result.step, result.reason)
        log.close()
    if world > 1:
        torch.distributed.barrier()
    return result


def apply_removals(model: torch.nn.Module, due: list, step: int, log: RunLog | None) -> None:
    """The removal events due at `step`: each still-live block freezes sigma_bar := sigma_avg (eq. 2) and
    becomes affine; each removal is logged with its sigma_bar. A block already removed is left alone."""
    for ev in due:
        if fakeln_modules(model)[ev.name].is_removed:
            continue
        sigma = remove_block(model, ev.name)
        if log:
            log.event("removal", step, block=ev.block, layer=ev.layer, sigma=sigma)


def accumulate_gradients(ddp, model: torch.nn.Module, feed, cfg: TrainConfig, hp, device: torch.device, *,
                         vocab: int, eot: int | None, tracker: SigmaTracker | None, ln_free: bool, fsdp: bool,
                         world: int, step: int) -> torch.Tensor:
    """Forward and backward of the grad_accum_steps micro-batches of optimizer step `step`.

    loss = CE(x, training labels) + aux_loss (eq. 3, LN-free runs with aux_weight > 0), each micro-batch
    scaled by 1 / grad_accum_steps; gradients are synchronised across ranks on the last micro-batch only.
    Returns [main loss, aux loss, stop flag (0)] summed over the micro-batches, on the device (no host sync)."""
    sums = torch.zeros(3, device=device)  # [main loss, aux loss] summed over micro-batches, stop flag
    for micro in range(hp.grad_accum_steps):
        x = feed.next()  # [batch, pos] (CPU; pinned on CUDA)
        try:  # streamed data is checked as it comes
            check_batch(str(cfg.dataset), x, vocab)
        except DataModelMismatch as e:
            raise ConfigError(f"{e} (found at step {step}; nothing of this step was trained)") from None
        x = x.to(device, non_blocking=True)
        sync = micro == hp.grad_accum_steps - 1
        if fsdp:
            model.set_requires_gradient_sync(sync)
        ctx = ddp.no_sync() if (world > 1 and not fsdp and not sync) else contextlib.nullcontext()
        with ctx:
            with _autocast(device, cfg.precision):
                # use_cache=False: a KV cache is useless in training, and its per-layer state
                # would guard (and recompile) every compiled block.
                main = ddp(input_ids=x, labels=training_labels(x, eot, hp.mask_eot_labels), use_cache=False).loss
            loss = main
            if ln_free and hp.aux_weight > 0:
                aux = aux_loss(fakeln_modules(model)["f"].last_std, x, eot, hp.aux_weight)
                loss = loss + aux
                sums[1] += aux.detach()
            (loss / hp.grad_accum_steps).backward()
        sums[0] += main.detach()
        if tracker:
            tracker.commit_micro_batch()
    return sums


@dataclass
class Checkpointer:
    """Writes a run's checkpoints (checkpoint.py): model, optimizer, FakeLN state, RNG and where the data
    stream stands. Under FSDP every rank takes part in gathering the state; only rank 0 writes, and says
    in status.json that it is checkpointing (a canceller waits for it to finish)."""

    out: Path
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    log: RunLog | None
    rank: int
    fsdp: bool
    ln_free: bool
    device: torch.device
    aliases: dict
    keep: int
    protect: tuple = ()

    def save(self, step: int, *, epoch: int, pos: int, tokens: int, history: list[float]) -> None:
        if self.rank != 0 and not self.fsdp:
            return
        msd, osd = gather_state(self.model, self.optimizer)  # a collective under FSDP
        if self.rank != 0:
            return
        self.log.status("running", step, checkpointing=True)  # a canceller waits for this to finish
        save_checkpoint(self.out, step, self.model, msd, osd, fakeln_state(self.model) if self.ln_free else {}, {
            "step": step, "epoch": epoch, "pos": pos, "tokens": tokens,
            "rng": _rng_state(self.device), "grad_norm_history": history[-50:],
        }, self.aliases, keep=self.keep, protect=self.protect)
        self.log.event("checkpoint", step, message=f"checkpoint at step {step}")
        self.log.status("running", step)


def training_labels(x: torch.Tensor, eot: int | None, mask_eot: bool) -> torch.Tensor:
    """Labels for the training CE: x itself, with end-of-text targets set to -100 (ignored) when mask_eot.

    The model shifts labels by one, so label t is the target of the prediction made at t - 1: masking
    labels equal to eot drops every prediction *of* an end-of-text token (what HF's
    DataCollatorForLanguageModeling does with pad = eos, as in the reference runs); the EOT tokens stay
    in the input. The mean is over the remaining targets. Evaluation (analysis/ce.py) scores them all.
    """
    if not mask_eot or eot is None:
        return x
    return x.masked_fill(x == eot, -100)


def _throughput_message(perf: Throughput) -> str:
    d = perf.describe()
    peak = (f"MFU against {d['peak_bf16_tflops']:g} TFLOP/s bf16 peak per device x {d['n_devices']}"
            if d["peak_bf16_tflops"] else "no MFU: the device's bf16 peak is not in lnfree's table")
    return (f"{d['flops_per_token'] / 1e9:.3g} GFLOP per token (6N + 12 L d T) on {d['device_name']}; {peak}")


def _nonfinite_now(vals: torch.Tensor, step: int, log: RunLog | None) -> TrainResult | None:
    """Read the step's values now (one host sync) and stop before the update if any is non-finite."""
    v = vals.tolist()
    if v[BAD] <= 0:
        return None
    return _nonfinite_result(step, v[MAIN], v[AUX], v[GNORM], log)


def _nonfinite_result(step: int, loss: float, aux: float, gn: float, log: RunLog | None) -> TrainResult:
    reason = (f"non-finite loss or gradient at step {step} (loss={loss}, aux_loss={aux}, grad_norm={gn}). "
              + NONFINITE_ADVICE)
    if log:
        log.event("nonfinite_loss", step, message=reason)
    return TrainResult("failed", step - 1, reason)


def _settle(records: StepRecords, log: RunLog | None, perf: Throughput, history: list[float], cfg: TrainConfig,
            hp, done: int, tracker: SigmaTracker | None) -> TrainResult | None:
    """Read the pending steps' values (one host sync), write their metrics rows and guard events.

    Returns a failed TrainResult when a pending step was non-finite (its update and every later one
    were skipped on the device); sets records.stopped (a cancel flag rode a step's all-reduce) and
    records.spike_stop (a grad spike with stop_on_grad_spike)."""
    rows, dt = records.resolve()
    names = tracker.names if tracker else []
    for row in rows:
        if row.bad:
            return _nonfinite_result(row.step, row.main_loss, row.aux_loss, row.grad_norm, log)
        gn = row.grad_norm
        if len(history) >= 5 and gn > cfg.grad_spike_factor * statistics.median(history[-20:]):
            msg = (f"gradient norm {gn:.3g} at step {row.step} is over {cfg.grad_spike_factor}x the recent median "
                   f"{statistics.median(history[-20:]):.3g}. " + GRAD_SPIKE_ADVICE)
            if log:
                log.event("grad_spike", row.step, message=msg, grad_norm=gn)
            if cfg.stop_on_grad_spike:
                records.spike_stop = msg
        history.append(gn)
        records.stopped = records.stopped or row.stop
        if log:
            step_tokens = hp.micro_batch_size * hp.seq_len * hp.grad_accum_steps * perf.n_devices
            tps = step_tokens / dt if dt > 0 else float("nan")
            log.step(step=row.step, loss=row.main_loss, aux_loss=row.aux_loss if tracker else None, lr=row.lr,
                     grad_norm=gn, tokens=row.tokens, **perf.fields(tps),
                     eta_s=(hp.max_steps - row.step) * dt, sigma=dict(zip(names, row.sigmas)) if tracker else None)
    if log:
        log.status("running", done)
    return None


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


def exit_code(result: TrainResult) -> int:
    if result.state == "finished":
        return 0
    if result.state == "cancelled":
        return 143 if "SIGTERM" in (result.reason or "") else 130
    return 1


def main_train(cfg: TrainConfig, resume: bool, resume_changes: dict | None = None) -> int:
    try:
        result = train(cfg, resume=resume, resume_changes=resume_changes)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # full disk, I/O error: the checkpoints so far are intact (status.json says failed)
        print(f"error: training stopped: {e}", file=sys.stderr)
        return 1
    print(f"{result.state} at step {result.step}" + (f": {result.reason}" if result.reason else ""))
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    return exit_code(result)
