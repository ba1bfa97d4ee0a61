"""Batching, devices, precision and progress: what every analysis loop shares.

* Tokens come in as an integer array [n_sequences, seq_len] (numpy or torch, any integer dtype);
  `iter_batches` moves one batch at a time to the model's device as int64.
* Precision: "fp32" runs in float32; "bf16" runs under `torch.autocast(dtype=bfloat16)`; "auto" is
  bf16 on CUDA and fp32 elsewhere (CPU autocast is slower than fp32 on most CPUs).
* Progress: every long computation takes an optional `progress(done, total)` callback, called after
  each batch with the number of sequences done. Calling it needs no host-device synchronisation.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Callable, Iterator

import numpy as np
import torch
from torch import nn

Progress = Callable[[int, int], None]
PRECISIONS = ("auto", "fp32", "bf16")


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """"auto"/None -> cuda if available else cpu; anything else as given."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def resolve_precision(precision: str, device: torch.device) -> str:
    """"auto" -> "bf16" on CUDA, "fp32" elsewhere; "fp32"/"bf16" unchanged."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    return precision


def autocast(precision: str, device: torch.device):
    """The autocast context for a resolved precision ("fp32": a no-op context)."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def as_tokens(tokens) -> torch.Tensor:
    """Tokens as a CPU int64 tensor [n_sequences, seq_len] (checks the shape)."""
    t = torch.as_tensor(np.asarray(tokens) if not isinstance(tokens, torch.Tensor) else tokens)
    if t.dim() != 2 or t.shape[1] < 2:
        raise ValueError(f"tokens must be [n_sequences, seq_len >= 2], got shape {tuple(t.shape)}")
    if t.dtype.is_floating_point or t.dtype == torch.bool:
        raise TypeError(f"tokens must be integers, got {t.dtype}")
    return t.to("cpu", torch.int64)


def analysis_inputs(model: nn.Module, tokens, precision: str) -> tuple[torch.Tensor, torch.device, str]:
    """What every analysis pass starts from: (the tokens checked by `as_tokens`, the model's device, the
    precision resolved for that device)."""
    tokens = as_tokens(tokens)
    device = model_device(model)
    return tokens, device, resolve_precision(precision, device)


def iter_batches(tokens: torch.Tensor, batch_size: int, device: torch.device,
                 progress: Progress | None = None) -> Iterator[tuple[int, int, torch.Tensor]]:
    """Yield (start, stop, x) with x = tokens[start:stop] on `device` as int64 [batch, seq_len].

    `progress(stop, n)` is called after the caller has processed each batch.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    n = tokens.shape[0]
    pin = device.type == "cuda"
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        x = tokens[start:stop]
        if pin:
            x = x.pin_memory()
        yield start, stop, x.to(device, non_blocking=pin)
        if progress is not None:
            progress(stop, n)


def fp32_logits(model: nn.Module, x: torch.Tensor, precision: str, device: torch.device) -> torch.Tensor:
    """Logits [batch, pos, vocab] with the unembedding in float32, the body under `precision`.

    GPT-2's logits lie around -50..-150, where bfloat16 steps are 0.25-1.0: an autocast lm_head would
    bias mean CE by ~0.01 nats, the size of the gaps in the paper's Table 1. The final norm's output
    is float32 (LayerNorm runs in float32 under autocast), so only the unembedding matmul is kept
    out of autocast.
    """
    with autocast(precision, device):
        h = model.base_model(input_ids=x, use_cache=False).last_hidden_state  # [batch, pos, d_model]
    return unembed_fp32(model, h)


def unembed_fp32(model: nn.Module, h: torch.Tensor) -> torch.Tensor:
    """The model's output embedding applied in float32 outside autocast. [..., d_model] -> [..., vocab]"""
    head = model.get_output_embeddings()
    with torch.autocast(device_type=h.device.type, enabled=False):
        bias = getattr(head, "bias", None)
        return torch.nn.functional.linear(h.float(), head.weight.float(), None if bias is None else bias.float())


_TF32_LOCK = threading.Lock()


@contextlib.contextmanager
def tf32_matmuls(device: torch.device):
    """Float32 matmuls on TF32 tensor cores inside the block, on CUDA only (elsewhere: no change).

    TF32 rounds the matmul inputs to a 10-bit mantissa and accumulates and returns float32: the
    unembedding runs at tensor-core speed with float32 logits, where bf16 logits (8-bit mantissa,
    steps of 0.25-1.0 at |logit| ~ 50-150) would bias mean CE. The process-wide setting is restored on
    exit; a lock keeps concurrent evaluations (app threads) from restoring it under each other.
    """
    if device.type != "cuda":
        yield
        return
    with _TF32_LOCK:
        old = torch.get_float32_matmul_precision()
        torch.set_float32_matmul_precision("high")
        try:
            yield
        finally:
            torch.set_float32_matmul_precision(old)
