"""sigma_avg tracking: one update per optimizer step, over all its micro-batches and ranks.

    sigma_avg(step) = sum_{micro-batches, ranks, b, s} sigma_{b,s} / number of tokens      (eq. 2)

followed by sigma_avg := sigma_avg(step) ("last" mode) or the exponential moving average

    sigma_avg := k * sigma_avg + (1 - k) * sigma_avg(step)

that the paper uses for GPT-2 Large/XL, with the factor k of one optimizer step

    k = ema                                  sigma_ema_tokens None: a memory in optimizer steps
    k = ema ** (n_step / tokens[kind])       a memory in tokens: ema per tokens[kind] tokens

where n_step is the number of tokens the block saw this step (all micro-batches and ranks) and kind is
the block kind (mlp, qk, v, f). The token form gives the same sigma_avg whatever the micro-batch size,
accumulation steps or number of GPUs of the same data (presets.py: how it reproduces the reference's
per-call momentum). Only live blocks track; removed blocks keep their frozen sigma_bar. Nothing is
tracked in eval mode.
"""

from __future__ import annotations

import torch
from torch import nn

from .surgery import fakeln_modules


def block_kind(name: str) -> str:
    """"mlp.3" -> "mlp", "f" -> "f"."""
    return name.split(".", 1)[0]


def step_factor(ema: float | None, tokens: int | dict | None, kind: str, n_step) -> float | torch.Tensor | None:
    """The EMA factor k of one optimizer step in which the block saw n_step tokens (module docstring).

    n_step is a host int, or a device tensor after a cross-rank all-reduce: k is then a device tensor
    too (no host sync)."""
    if not ema:
        return None
    t = tokens.get(kind) if isinstance(tokens, dict) else tokens
    if t is None:
        return float(ema)
    return float(ema) ** (n_step / t)


class SigmaTracker:
    def __init__(self, model: nn.Module, ema: float | None = None, ema_tokens: int | dict | None = None):
        if ema is not None and not (0.0 <= ema < 1.0):
            raise ValueError(f"sigma EMA factor must be in [0, 1), got {ema}")
        self.modules = fakeln_modules(model)
        self.ema = ema or None
        self.ema_tokens = ema_tokens

    def commit_micro_batch(self) -> None:
        """Call after each micro-batch's backward: adds its statistics to the current step."""
        for m in self.modules.values():
            m.commit_micro_batch()

    def end_step(self) -> None:
        """Call once per optimizer step: reduce over ranks and update every live block's sigma_avg.

        No host sync: the sums stay on the device; token counts are host ints in one process and are
        all-reduced with the sums (and divided on the device) across ranks."""
        live = [m for m in self.modules.values() if not m.is_removed]
        if not live:
            return
        per_block = [m.step_statistics() for m in live]  # (device sum, host count) per block
        committed = [s for s, n in per_block if n]
        if not committed:
            for m in live:
                m.reset_step()
            return
        device = committed[0].device
        zero = torch.zeros((), device=device)
        sums = torch.stack([s.float() if n else zero for s, n in per_block])  # [n_live]
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            counts = torch.tensor([float(n) for _, n in per_block])  # [n_live], host
            stats = torch.stack([sums, counts.to(device, non_blocking=True)], dim=1)  # [n_live, 2]
            if torch.distributed.get_backend() == "nccl" and device.type != "cuda":
                stats = stats.cuda()
            torch.distributed.all_reduce(stats)
            for m, s, n in zip(live, stats[:, 0], stats[:, 1]):
                # a device count: the mean and the token-memory factor are computed on the device
                m.update_sigma_avg(s, n, step_factor(self.ema, self.ema_tokens, block_kind(m.name), n))
            return
        for m, s, (_, n) in zip(live, sums, per_block):
            m.update_sigma_avg(s, n, step_factor(self.ema, self.ema_tokens, block_kind(m.name), n))

    def sigma_vector(self) -> torch.Tensor:
        """Current sigma per block as one device tensor [n_blocks] (order of `names`): the frozen
        sigma_bar if removed, else the tracked sigma_avg. No host sync."""
        return torch.stack([(m.sigma if m.is_removed else m.sigma_avg).float() for m in self.modules.values()])

    @property
    def names(self) -> list[str]:
        return list(self.modules)

    def sigmas(self) -> dict[str, float]:
        """Current sigma per block (one host sync)."""
        return dict(zip(self.modules, self.sigma_vector().cpu().tolist()))
