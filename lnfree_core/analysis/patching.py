"""Activation patching and attribution patching of the residual stream on IOI (section 5.2, Fig. 2).

Sites: resid_pre.l at position t (the input of block l, hooks.py), for every layer l = 0..L-1 and
position t = 0..T-1 of the aligned IOI prompts (ioi.py).

Metric. The logit difference at the last position, LD(x) = logit_IO(x) - logit_S(x), with IO and S
of the clean prompt, averaged over the n prompts, normalised so that the corrupted run scores 0 and
the clean run 1:

    F(x) = (mean_i LD_i(x) - mean_i LD_i(corr)) / (mean_i LD_i(clean) - mean_i LD_i(corr))

Activation patching (eq. 6): the corrupted run with resid_pre.l[t] replaced by its clean value,

    act[l, t] = F(corr; a_lt <- a_lt(clean)) - F(corr)   = mean_i dLD_act[i, l, t] / D

Attribution patching (eq. 7, Nanda 2023): the first-order estimate at the corrupted run, one
backward pass for every site at once,

    attr[l, t] = grad_{a_lt} F(corr) . (a_lt(clean) - a_lt(corr))   = mean_i dLD_attr[i, l, t] / D

with D = mean_i LD_i(clean) - mean_i LD_i(corr). The per-prompt raw differences dLD [n, L, T] are
kept, so F is computed for any subset of prompts. The error per site is attr - act, and the paper's
per-layer improvement score of an LN-free model over its vanilla counterpart is

    imp[l] = sum_t |err_vanilla[l, t]| - sum_t |err_lnfree[l, t]|      mean and std over layers

(positive: attribution patching is more accurate in the LN-free model; the paper: mu = -0.026,
sigma = 0.082 for GPT-2 Small; std here is the population std, ddof = 0).

Batching. Activation patching needs one corrupted forward per (prompt, site); a forward of R rows
patches R (prompt, site) pairs at once: row r runs prompt i_r with site (l_r, t_r), and block l's
pre-hook writes the clean activation into the rows whose l_r = l. Sites whose clean and corrupted
activations are equal for every prompt of a batch (all positions before the first token that differs)
have act = 0 exactly and are not run. Only the two answer logits of the last position are computed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..method.adapters import adapter_for
from .hooks import first_input, hooks
from .runtime import Progress, autocast, model_device, resolve_precision


@dataclass
class PatchingResult:
    """Raw per-prompt logit-difference changes; normalised views below."""

    ld_clean: np.ndarray  # [n] LD_i(clean)
    ld_corrupt: np.ndarray  # [n] LD_i(corr)
    act: np.ndarray  # [n, L, T] LD_i(corr; a_lt <- clean) - LD_i(corr)
    attr: np.ndarray  # [n, L, T] grad_a LD_i(corr) . (a_lt(clean) - a_lt(corr))
    seconds: dict[str, float]  # wall time of "clean", "attribution", "activation"

    @property
    def denominator(self) -> float:
        return float(self.ld_clean.mean() - self.ld_corrupt.mean())

    def normalised(self, which: str) -> np.ndarray:
        """F-change per site [L, T] of "act" or "attr" (module docstring)."""
        raw = self.act if which == "act" else self.attr
        d = self.denominator
        if d == 0:
            raise ValueError("the clean and corrupted runs have the same mean logit difference: the normalised "
                             "metric is undefined")
        return raw.mean(axis=0) / d

    @property
    def error(self) -> np.ndarray:
        """attr - act per site [L, T] (normalised)."""
        return self.normalised("attr") - self.normalised("act")

    def layer_abs_error(self) -> np.ndarray:
        """sum_t |attr - act| per layer [L]."""
        return np.abs(self.error).sum(axis=1)


def improvement_score(vanilla: PatchingResult, ln_free: PatchingResult) -> dict:
    """The paper's per-layer improvement score (module docstring): {"per_layer", "mean", "std"}."""
    if vanilla.act.shape[1:] != ln_free.act.shape[1:]:
        raise ValueError(f"the two models' patching grids differ: {vanilla.act.shape[1:]} vs {ln_free.act.shape[1:]}")
    imp = vanilla.layer_abs_error() - ln_free.layer_abs_error()  # [L]
    return {"per_layer": imp.tolist(), "mean": float(imp.mean()), "std": float(imp.std())}


def _wide(dtype: torch.dtype) -> torch.dtype:
    """float32, or the model's dtype when it is wider (float64 in the tests)."""
    return torch.promote_types(dtype, torch.float32)


def _answer_dirs(model: nn.Module, io: torch.Tensor, s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(W_U[:, IO] - W_U[:, S] per prompt [n, d_model] float32, the bias difference [n])."""
    head = model.get_output_embeddings()
    w = head.weight.to(_wide(head.weight.dtype))  # [vocab, d_model], float32 or wider
    bias = getattr(head, "bias", None)
    b = torch.zeros(io.shape[0], device=w.device, dtype=w.dtype) if bias is None else (bias[io] - bias[s]).to(w.dtype)
    return w[io] - w[s], b


def _logit_diff(model: nn.Module, x: torch.Tensor, dirs: torch.Tensor, bias: torch.Tensor, prec: str,
                device: torch.device) -> torch.Tensor:
    """LD per row [rows]: the final hidden state of the last position against the answer directions."""
    with autocast(prec, device):
        h = model.base_model(input_ids=x, use_cache=False).last_hidden_state[:, -1]  # [rows, d_model]
    with torch.autocast(device_type=device.type, enabled=False):
        return (h.to(dirs.dtype) * dirs).sum(-1) + bias


def _run_clean(model, blocks, x, dirs, bias, prec, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(LD [b], resid_pre of every layer [b, L, T, d_model])."""
    cap: list[torch.Tensor] = [None] * len(blocks)  # type: ignore[list-item]

    def make(l):
        def pre(module, args, kwargs):
            cap[l] = first_input(args, kwargs).detach()
        return pre

    with hooks(pre=[(b, make(l)) for l, b in enumerate(blocks)]), torch.no_grad():
        ld = _logit_diff(model, x, dirs, bias, prec, device)
    return ld, torch.stack(cap, dim=1)


def _run_attribution(model, blocks, x, dirs, bias, prec, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(LD [b], grad of sum_i LD_i w.r.t. resid_pre of every layer [b, L, T, d_model], resid_pre itself)."""
    cap: list[torch.Tensor] = [None] * len(blocks)  # type: ignore[list-item]

    def make(l):
        def pre(module, args, kwargs):
            h = first_input(args, kwargs)
            if l == 0 and not h.requires_grad:  # parameters frozen: start the graph here
                h = h.detach().requires_grad_(True)
                args = (h, *args[1:]) if args else args
                if not args:
                    kwargs = {**kwargs, "hidden_states": h}
            cap[l] = h
            return args, kwargs
        return pre

    with hooks(pre=[(b, make(l)) for l, b in enumerate(blocks)]), torch.enable_grad():
        ld = _logit_diff(model, x, dirs, bias, prec, device)
        grads = torch.autograd.grad(ld.sum(), cap)
    wide = _wide(grads[0].dtype)
    return ld.detach(), torch.stack([g.to(wide) for g in grads], dim=1), torch.stack([c.detach() for c in cap], dim=1)


def patch_residual(model: nn.Module, clean, corrupt, io, s, *, batch_size: int = 16, rows_per_forward: int = 256,
                   precision: str = "fp32", progress: Progress | None = None) -> PatchingResult:
    """Activation and attribution patching of resid_pre at every layer and position (module docstring).

    clean, corrupt: token ids [n, T] (same length, aligned); io, s: answer ids [n]. `batch_size`
    prompts share one clean/corrupted/backward pass; `rows_per_forward` (prompt, site) pairs share one
    patched forward. `progress(done, n)` counts prompts.
    """
    device = model_device(model)
    prec = resolve_precision(precision, device)
    clean_t = torch.as_tensor(np.asarray(clean), dtype=torch.long)
    corrupt_t = torch.as_tensor(np.asarray(corrupt), dtype=torch.long)
    io_t = torch.as_tensor(np.asarray(io), dtype=torch.long)
    s_t = torch.as_tensor(np.asarray(s), dtype=torch.long)
    if clean_t.shape != corrupt_t.shape or clean_t.dim() != 2:
        raise ValueError(f"clean and corrupted prompts must be aligned [n, T], got {tuple(clean_t.shape)} and "
                         f"{tuple(corrupt_t.shape)}")
    if io_t.shape != (clean_t.shape[0],) or s_t.shape != io_t.shape:
        raise ValueError("io and s need one answer id per prompt")
    n, T = clean_t.shape
    vocab = model.get_output_embeddings().weight.shape[0]
    if max(int(clean_t.max()), int(corrupt_t.max()), int(io_t.max()), int(s_t.max())) >= vocab:
        raise ValueError(f"token ids outside the model's vocabulary of {vocab} tokens")
    blocks = adapter_for(model).blocks(model)
    L = len(blocks)
    model.eval()
    ld_clean = np.zeros(n)
    ld_corr = np.zeros(n)
    act = np.zeros((n, L, T))
    attr = np.zeros((n, L, T))
    secs = {"clean": 0.0, "attribution": 0.0, "activation": 0.0}
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        b = stop - start
        xc, xr = clean_t[start:stop].to(device), corrupt_t[start:stop].to(device)
        dirs, bias = _answer_dirs(model, io_t[start:stop].to(device), s_t[start:stop].to(device))
        t0 = time.perf_counter()
        ldc, a_clean = _run_clean(model, blocks, xc, dirs, bias, prec, device)  # [b], [b, L, T, d]
        sync()
        t1 = time.perf_counter()
        ldr, grad, a_corr = _run_attribution(model, blocks, xr, dirs, bias, prec, device)
        wide = _wide(a_clean.dtype)
        delta = a_clean.to(wide) - a_corr.to(wide)  # [b, L, T, d]
        attr[start:stop] = (grad * delta).sum(-1).double().cpu().numpy()
        sync()
        t2 = time.perf_counter()
        # activation patching: the sites where some prompt's activation differs
        differs = delta.abs().amax(dim=(0, 3)) > 0  # [L, T]
        sites = differs.nonzero().tolist()  # [(l, t)]
        pairs = [(i, l, t) for (l, t) in sites for i in range(b)]
        out = torch.zeros(b, L, T, dtype=torch.float64, device=device)
        for c0 in range(0, len(pairs), rows_per_forward):
            chunk = pairs[c0:c0 + rows_per_forward]
            idx = torch.tensor(chunk, device=device)  # [R, 3]: prompt, layer, position
            rows = idx[:, 0]
            x = xr[rows]  # [R, T]

            def make(l, idx=idx, rows=rows):
                sel = (idx[:, 1] == l).nonzero().squeeze(1)  # [R_l] rows patched at layer l
                if sel.numel() == 0:
                    return None
                tpos = idx[sel, 2]
                value = a_clean[rows[sel], l, tpos]  # [R_l, d]

                def pre(module, args, kwargs):
                    h = first_input(args, kwargs).clone()
                    h[sel, tpos] = value.to(h.dtype)
                    return ((h, *args[1:]), kwargs) if args else (args, {**kwargs, "hidden_states": h})
                return pre

            pre_hooks = [(blk, fn) for l, blk in enumerate(blocks) if (fn := make(l)) is not None]
            with hooks(pre=pre_hooks), torch.no_grad():
                ld = _logit_diff(model, x, dirs[rows], bias[rows], prec, device)  # [R]
            out[rows, idx[:, 1], idx[:, 2]] = (ld - ldr[rows]).double()
        act[start:stop] = out.cpu().numpy()
        sync()
        t3 = time.perf_counter()
        ld_clean[start:stop] = ldc.double().cpu().numpy()
        ld_corr[start:stop] = ldr.double().cpu().numpy()
        secs["clean"] += t1 - t0
        secs["attribution"] += t2 - t1
        secs["activation"] += t3 - t2
        if progress is not None:
            progress(stop, n)
    return PatchingResult(ld_clean=ld_clean, ld_corrupt=ld_corr, act=act, attr=attr, seconds=secs)
