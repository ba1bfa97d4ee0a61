"""Keeping the training step on the device: per-step values read by the host in batches, and data prefetch.

A GPU runs ahead of the Python loop only while nothing asks it for a value. Each `.item()`,
`float(t)` or `.tolist()` waits for the whole queue to drain (a pipeline bubble), so the trainer
keeps every per-step value (main loss, aux loss, gradient norm, stop flag, every block's sigma) in
one small device tensor per step (`StepRecords.add`) and reads them all with a single transfer at
resolution points: every `log_every` steps, before a checkpoint or a removal event, at the end, and
when a signal arrives (one process). Rows are still written for every step.

Without a per-step read, the finite check must act on the device: an optimizer that accepts a
`found_inf` tensor (fused AdamW, as on CUDA) skips its update when the step's loss or gradient norm
is non-finite, and once a step was non-finite every later step is skipped too (`halted`), so the
weights stay those of the last good step until the host sees the flag and stops the run, as if it
had stopped at once. Optimizers without `found_inf` are resolved every step (`deferred` False),
before their update; on a CPU, where every op is synchronous, that costs nothing.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass

import torch

# Layout of one step's value vector: [main loss, aux loss, grad norm, stop flag, non-finite, sigma_0 ...]
MAIN, AUX, GNORM, STOP, BAD, SIGMA0 = range(6)


def supports_found_inf(optimizer: torch.optim.Optimizer) -> bool:
    """True for optimizers that skip their update on a device flag (torch's fused Adam/AdamW/SGD)."""
    return bool(getattr(optimizer, "_step_supports_amp_scaling", False)) and all(
        g.get("fused") for g in optimizer.param_groups)


@dataclass
class StepRow:
    step: int
    lr: float
    tokens: int  # tokens seen after this step
    main_loss: float
    aux_loss: float
    grad_norm: float
    stop: bool
    bad: bool
    sigmas: list[float]


class StepRecords:
    """Per-step device values since the last resolution, read with one device-to-host transfer."""

    def __init__(self, device: torch.device, deferred: bool):
        self.device = device
        self.deferred = deferred
        self.halted = torch.zeros((), dtype=torch.bool, device=device)  # a non-finite step was seen
        self._pending: list[tuple[int, float, int, torch.Tensor]] = []
        self.mark = time.perf_counter()
        self.stopped = False  # a resolved step carried the cancel flag
        self.spike_stop: str | None = None  # why a resolved step's grad spike stops the run

    def values(self, sums: torch.Tensor, accum: int, grad_norm: torch.Tensor) -> torch.Tensor:
        """The step's value vector (device) from sums = [main, aux, stop] summed over micro-batches;
        the sigmas are appended after the step's sigma update (see `add`)."""
        loss = sums[:2] / accum  # [2]
        gn = grad_norm.reshape(1).float()
        bad = ~(torch.isfinite(loss).all() & torch.isfinite(gn).all())
        return torch.cat([loss, gn, sums[2:3], bad.reshape(1).float()])  # [5]

    def skip_flag(self, vals: torch.Tensor) -> torch.Tensor:
        """found_inf for the optimizer (float 0/1 on the device): this step or an earlier one was non-finite."""
        self.halted = self.halted | (vals[BAD] > 0)
        return self.halted.float()

    def add(self, step: int, lr: float, tokens: int, vals: torch.Tensor) -> None:
        self._pending.append((step, lr, tokens, vals))

    def __len__(self) -> int:
        return len(self._pending)

    def resolve(self) -> tuple[list[StepRow], float]:
        """Rows of the pending steps (one host sync) and the wall seconds per step since the last mark."""
        if not self._pending:
            return [], 0.0
        vals = torch.stack([v for *_, v in self._pending]).cpu().tolist()  # the only host sync
        now = time.perf_counter()
        dt = (now - self.mark) / len(self._pending)
        rows = [StepRow(step, lr, tok, v[MAIN], v[AUX], v[GNORM], v[STOP] > 0, v[BAD] > 0, v[SIGMA0:])
                for (step, lr, tok, _), v in zip(self._pending, vals)]
        self._pending = []
        self.mark = now
        return rows, dt

    def restart_clock(self) -> None:
        """Do not count what happens now (checkpoints, removal events) in the next rows' step time."""
        self.mark = time.perf_counter()


class Prefetcher:
    """Reads the next micro-batches in a background thread while the device computes.

    `source.next()` returns a numpy array [batch, seq_len]; `source.epoch` / `source.pos` say where the
    stream is. `next()` returns the tensor (pinned when `pin`) and sets `epoch`/`pos` to the stream
    position just after that batch, so a checkpoint records what was consumed, not what was read ahead.
    An exception in the reader is raised by the `next()` call that would have returned its batch.
    """

    def __init__(self, source, depth: int = 2, pin: bool = False):
        self.source, self.pin = source, pin
        self.epoch, self.pos = source.epoch, source.pos
        self._q: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lnfree-prefetch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                arr = self.source.next()
                x = torch.from_numpy(arr).long()  # [batch, seq_len]
                item = (x.pin_memory() if self.pin else x, self.source.epoch, self.source.pos, None)
            except BaseException as e:  # handed to the consumer
                item = (None, None, None, e)
            while not self._stop.is_set():
                try:
                    self._q.put(item, timeout=0.1)
                    break
                except queue.Full:
                    continue
            if item[3] is not None:
                return

    def next(self) -> torch.Tensor:
        x, epoch, pos, err = self._q.get()
        if err is not None:
            raise err
        self.epoch, self.pos = epoch, pos
        return x

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
