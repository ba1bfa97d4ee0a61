"""Benchmark: an LN-removal training step against a vanilla fine-tuning step of the same model.

Both steps run side by side in one process, alternating, on the same data: forward (bf16 autocast
on CUDA), CE loss (+ the aux loss for LN removal), backward, sigma tracking, AdamW step. The
LN-removal model is measured in three phases of a schedule: all blocks live (tracking), LN_qk
removed but LN_v live (the split q/k vs v path), and every block removed.

Memory is the peak of what a step holds beyond the weights: on CUDA torch.cuda.max_memory_allocated;
on CPU the bytes of tensors autograd saves for backward (deduplicated by storage), the part that
differs between the two models, plus parameters, gradients and AdamW states.

The last line is `time_ratio=<x> memory_ratio=<y>` (LN removal over vanilla, worst phase). Target: <= 1.10.

    python bench/train_step.py                     # GPT-2 Small shape on CUDA, a smaller one on CPU
    python bench/train_step.py --layers 12 --width 768 --batch 8 --seq 1024 --device cuda
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lnfree_core.aux_loss import aux_loss  # noqa: E402
from lnfree_core.optim import make_optimizer  # noqa: E402
from lnfree_core.surgery import fakeln_modules, make_removable  # noqa: E402
from lnfree_core.tracking import SigmaTracker  # noqa: E402


def build(args, ln_free: bool, phase: str):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    cfg = GPT2Config(n_layer=args.layers, n_embd=args.width, n_head=max(1, args.width // 64), vocab_size=args.vocab,
                     n_positions=args.seq, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    model = GPT2LMHeadModel(cfg).to(args.device).train()
    tracker = None
    if ln_free:
        mods = make_removable(model)
        mods["f"].capture_std = True
        for name, m in mods.items():
            if phase == "qk-removed" and name.startswith(("mlp.", "qk.")):
                m.remove(1.0)
            if phase == "all-removed":
                m.remove(1.0)
        tracker = SigmaTracker(model)
    opt = make_optimizer(model, 1e-4, 0.01)
    return model, opt, tracker


def step(model, opt, tracker, x, device):
    ctx = torch.autocast("cuda", dtype=torch.bfloat16) if device.startswith("cuda") else torch.autocast("cpu", enabled=False)
    with ctx:
        loss = model(input_ids=x, labels=x).loss
    if tracker is not None:
        loss = loss + aux_loss(fakeln_modules(model)["f"].last_std, x, 50256, 0.1)
    loss.backward()
    if tracker is not None:
        tracker.commit_micro_batch()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    if tracker is not None:
        tracker.end_step()


def saved_bytes(model, tracker, x) -> int:
    """Bytes of the tensors autograd keeps for backward in one forward (unique storages)."""
    seen = {}

    def pack(t):
        try:
            key = t.untyped_storage().data_ptr()
            seen[key] = max(seen.get(key, 0), t.untyped_storage().nbytes())
        except (RuntimeError, NotImplementedError):
            pass
        return t

    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = model(input_ids=x, labels=x).loss
        if tracker is not None:
            loss = loss + aux_loss(fakeln_modules(model)["f"].last_std, x, 50256, 0.1)
    loss.backward()
    model.zero_grad(set_to_none=True)
    for m in fakeln_modules(model).values():
        m.reset_step()
    return sum(v for k, v in seen.items() if k not in params)


def state_bytes(model) -> int:
    n = sum(p.numel() * p.element_size() for p in model.parameters())
    return 4 * n  # weights + grads + AdamW exp_avg + exp_avg_sq (all fp32)


def main() -> None:
    cuda = torch.cuda.is_available()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if cuda else "cpu")
    ap.add_argument("--layers", type=int, default=12 if cuda else 4)
    ap.add_argument("--width", type=int, default=768 if cuda else 256)
    ap.add_argument("--vocab", type=int, default=50257 if cuda else 8192)
    ap.add_argument("--batch", type=int, default=8 if cuda else 4)
    ap.add_argument("--seq", type=int, default=1024 if cuda else 256)
    ap.add_argument("--repeats", type=int, default=6 if cuda else 5)
    ap.add_argument("--warmup", type=int, default=2)
    args = ap.parse_args()
    dev = args.device
    x = torch.randint(0, args.vocab, (args.batch, args.seq), device=dev)
    phases = ["live", "qk-removed", "all-removed"]
    models = {"vanilla": build(args, False, "")}
    for ph in phases:
        models[ph] = build(args, True, ph)
    print(f"device={dev} layers={args.layers} width={args.width} vocab={args.vocab} batch={args.batch}x{args.seq}")

    times = {k: [] for k in models}
    for k, (m, o, t) in models.items():  # warm-up
        for _ in range(args.warmup):
            step(m, o, t, x, dev)
    for _ in range(args.repeats):  # alternate so that drifting machine load hits every variant alike
        for k, (m, o, t) in models.items():
            if dev.startswith("cuda"):
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            step(m, o, t, x, dev)
            if dev.startswith("cuda"):
                torch.cuda.synchronize()
            times[k].append(time.perf_counter() - t0)

    mem = {}
    for k, (m, o, t) in models.items():
        if dev.startswith("cuda"):
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            step(m, o, t, x, dev)
            mem[k] = torch.cuda.max_memory_allocated()
        else:
            mem[k] = state_bytes(m) + saved_bytes(m, t, x)

    base_t = statistics.median(times["vanilla"])
    tokens = args.batch * args.seq
    print(f"{'variant':14s} {'median s/step':>14s} {'tokens/s':>10s} {'time ratio':>10s} {'memory MB':>10s} {'mem ratio':>9s}")
    worst_t = worst_m = 0.0
    for k in models:
        med = statistics.median(times[k])
        tr, mr = med / base_t, mem[k] / mem["vanilla"]
        if k != "vanilla":
            worst_t, worst_m = max(worst_t, tr), max(worst_m, mr)
        print(f"{k:14s} {med:14.4f} {tokens / med:10.0f} {tr:10.3f} {mem[k] / 2**20:10.1f} {mr:9.3f}")
    print(f"time_ratio={worst_t:.3f} memory_ratio={worst_m:.3f}")


if __name__ == "__main__":
    main()
