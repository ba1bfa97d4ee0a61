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
import signal
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from .checkpoint import gather_state, remove_partial_checkpoints, save_checkpoint
from .config import ConfigError, TrainConfig
from .data.checks import DataModelMismatch, check_batch
from .method.aux_loss import aux_loss
from .method.surgery import fakeln_modules, fakeln_state, make_removable, remove_block
from .method.tracking import SigmaTracker
from .optim import lr_at, make_optimizer
from .rundir import RunLog
from .step_sync import AUX, BAD, GNORM, MAIN, StepRecords, supports_found_inf
from .throughput import Throughput, model_flops_per_token
from .train_setup import (claim_run_dir, dist_info, fail_setup, init_distributed, load_for_training, mark_starting, open_feed,
                          pick_device, place_model, resolve_config, restore_checkpoint, restore_optimizer, rng_state,
                          wrap_ddp)

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


@dataclass
class TrainResult:
    state: str  # finished | failed | cancelled
    step: int
    reason: str | None = None


# ---------------------------------------------------------------------------------------- train
def train(cfg: TrainConfig, resume: bool = False, resume_changes: dict | None = None) -> TrainResult:
    """Run (or resume) a training run described by `cfg`. Returns how it ended.

    The process (rank 0) holds RUN_DIR/trainer.lock while it runs: a second trainer on the same run
    is refused (ConfigError), a dead one's lock is taken over. `resume_changes`: the settings given
    explicitly with --resume (see train_setup.SAFE_ON_RESUME; others must equal the saved ones).
    """
    out = Path(cfg.out)
    lock, created = claim_run_dir(out) if dist_info()[0] == 0 else (None, False)
    try:
        return _train_locked(cfg, resume, resume_changes or {}, out, created)
    finally:
        if lock is not None:
            lock.release()


def _train_locked(cfg: TrainConfig, resume: bool, resume_changes: dict, out: Path, created: bool) -> TrainResult:
    # ---- setup (train_setup.py): config, device, model, checkpoint, data
    rank, world, local_rank = dist_info()
    started = time.time()
    notes: list[str] = []  # said on stdout and in the "resumed"/"started" event
    if rank == 0:
        removed = remove_partial_checkpoints(out)
        if removed:
            notes.append(f"removed {len(removed)} half-written checkpoint folder(s) of an interrupted save: "
                         + ", ".join(removed))
    cfg, resume = resolve_config(cfg, resume, resume_changes, out, created=created, rank=rank, started=started,
                                 notes=notes)
    if rank == 0:
        mark_starting(out, resume, started)
    try:
        device = pick_device(cfg.device, local_rank, world)
    except ConfigError as e:
        if rank == 0:
            fail_setup(out, False, str(e), started)
        raise
    init_distributed(device, world)

    torch.manual_seed(cfg.seed)
    model, adapter, sched = load_for_training(cfg, out=out, created=created and not resume, rank=rank, started=started)
    hp = sched.hparams
    vocab = model.get_input_embeddings().num_embeddings
    ln_free = cfg.mode == "ln-free"
    if ln_free:
        make_removable(model)
        fakeln_modules(model)["f"].capture_std = True
    eot = adapter.eot_id(model)
    if rank == 0 and not resume:
        TrainConfig(**{**cfg.to_dict(), "schedule": sched.to_dict(), "overrides": {}}).save(out / "config.yaml")
    log = RunLog(out, hp.max_steps) if rank == 0 else None
    if log is not None and log.repaired:
        notes.append("repaired a half-written last line of metrics.jsonl (left by a killed trainer)")

    restored = restore_checkpoint(model, out, resume, rank, notes)
    ckpt = restored.ckpt
    done, tokens_seen, history = restored.step, restored.tokens, restored.history
    fsdp = world > 1 and cfg.distributed == "fsdp"
    aliases = place_model(model, adapter, cfg, hp, device, fsdp)
    tracker = SigmaTracker(model, hp.sigma_ema, hp.sigma_ema_tokens) if ln_free else None
    optimizer = make_optimizer(model, hp.lr, hp.weight_decay, hp.adam_betas,
                               decay_fakeln_gain=ln_free and hp.weight_decay_fakeln_gain)
    restore_optimizer(optimizer, model, restored, device)
    ddp = wrap_ddp(model, device, world, fsdp)
    feed = open_feed(cfg, hp, rank, world, restored, device, log)
    events = [e for e in sched.events()] if ln_free else []
    stop = _Signals()

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

    # ---- the step loop
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
            vals = step_values(sums, model, records, hp, world, cancelling=stop.seen is not None)
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
                    or (world == 1 and stop.seen is not None)):
                failed = _settle(records, log, perf, history, cfg, hp, done, tracker)
                if failed is not None:
                    result = failed
                    break
            if records.stopped:
                checkpoint(done)
                sig = signal.Signals(stop.seen).name if stop.seen is not None else "SIGTERM (on another rank)"
                result = TrainResult("cancelled", done, f"cancelled by signal {sig}")
                break
            if records.spike_stop is not None:
                checkpoint(done)
                result = TrainResult("failed", done, records.spike_stop)
                break
            if done % cfg.save_every == 0 or done == hp.max_steps or done in hp.keep_steps:
                checkpoint(done)
                records.restart_clock()
                if world == 1 and stop.seen is not None and done < hp.max_steps:
                    # cancelled while this checkpoint was written: it is the last one, stop now
                    sig = signal.Signals(stop.seen).name
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
        stop.restore()
    if log:
        log.status(result.state, result.step, result.reason)
        log.close()
    if world > 1:
        torch.distributed.barrier()
    return result


class _Signals:
    """SIGTERM and SIGINT (a cancel) set `seen` while a run trains: the loop stops after the step in progress
    (checkpointed); restore() puts the previous handlers back."""

    def __init__(self):
        self.seen: int | None = None
        self._old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}

    def _on_signal(self, signum, _frame) -> None:
        self.seen = signum

    def restore(self) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)


def step_values(sums: torch.Tensor, model: torch.nn.Module, records: StepRecords, hp, world: int, *,
                cancelling: bool) -> torch.Tensor:
    """One optimizer step's values once its gradients are in: the loss sums averaged over ranks, the
    gradients clipped to hp.grad_clip (0: not clipped) and their total norm taken, a cancel seen by any
    rank raised as the stop flag (so every rank stops after this same step). On the device, no host sync.

    Returns [main loss, aux loss, grad norm, stop, non-finite] (step_sync's layout)."""
    if cancelling:
        sums[2] = 1.0
    if world > 1:
        torch.distributed.all_reduce(sums)
        sums[:2] /= world
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), hp.grad_clip if hp.grad_clip > 0 else float("inf"))
    gn_t = grad_norm.full_tensor() if hasattr(grad_norm, "full_tensor") else grad_norm
    return records.values(sums, hp.grad_accum_steps, gn_t)


def apply_removals(model: torch.nn.Module, due: list, step: int, log: RunLog | None) -> None:
    """The removal events due at `step`: each still-live block freezes sigma_bar := sigma_avg (eq. 2) and
    becomes affine; each removal is logged with its sigma_bar. A block already removed is left alone."""
    for ev in due:
        if fakeln_modules(model)[ev.name].is_removed:
            continue
        sigma = remove_block(model, ev.name)
        if log:
            log.event("removal", step, block=ev.block, layer=ev.layer, sigma=sigma)


def _autocast(device: torch.device, precision: str):
    if precision == "bf16" or (precision == "auto" and device.type == "cuda"):
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


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
            "rng": rng_state(self.device), "grad_norm_history": history[-50:],
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
