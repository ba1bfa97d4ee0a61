"""Benchmark: an LN-removal training step against a vanilla fine-tuning step of the same model.

All variants run in one process on the same data: forward (bf16 autocast on CUDA), CE loss (+ the
aux loss for LN removal), backward, sigma tracking, AdamW step. The LN-removal model is measured in
three phases of a schedule: all blocks live (tracking), LN_qk removed but LN_v live (the split q/k vs
v path), and every block removed.

Timing survives a busy machine: each round runs one step of every variant, in an order rotated every
round (so no variant always runs first or last), and the ratio LN-removal / vanilla is taken within
each round, where the machine load is nearly the same. The result is the median of those per-round
ratios with their interquartile range (IQR), min-max and the median's distribution-free 95%
confidence interval; a ratio whose interval is wider than +-(--max-ci) is reported as inconclusive
instead of as a number to trust (more rounds narrow it). On CPU the default clock is this
process's CPU time, which other processes disturb much less than wall time.

Memory is the peak of what a step holds beyond the weights: on CUDA torch.cuda.max_memory_allocated;
on CPU the bytes of tensors autograd saves for backward (deduplicated by storage), the part that
differs between the two models, plus parameters, gradients and AdamW states.

The last line is `time_ratio=<median> ci95=<lo>-<hi> iqr=<q1>-<q3> memory_ratio=<y> (conclusive|inconclusive ...)`
(LN removal over vanilla, the worst phase). Target (issue 17): <= 1.05, stable within +-0.05 across runs.

    python bench/train_step.py                     # GPT-2 Small shape on CUDA, a smaller one on CPU
    python bench/train_step.py --layers 12 --width 768 --batch 8 --seq 1024 --device cuda
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import torch
from transformers import GPT2Config, GPT2LMHeadModel

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lnfree_core.method.aux_loss import aux_loss  # noqa: E402
from lnfree_core.optim import make_optimizer  # noqa: E402
from lnfree_core.method.surgery import fakeln_modules, make_removable  # noqa: E402
from lnfree_core.method.tracking import SigmaTracker  # noqa: E402


def build(args, ln_free: bool, phase: str):
    torch.manual_seed(0)
    cfg = GPT2Config(n_layer=args.layers, n_embd=args.width, n_head=max(1, args.width // 64), vocab_size=args.vocab,
                     n_positions=args.seq, bos_token_id=args.vocab - 1, eos_token_id=args.vocab - 1,
                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
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
    """One optimizer step as the trainer runs it (bf16 autocast on CUDA, the aux loss and sigma tracking for a
    FakeLN model, clipping at 1.0); returns the loss. Also gpu_suite.py's train step."""
    ctx = torch.autocast("cuda", dtype=torch.bfloat16) if device.startswith("cuda") else torch.autocast("cpu", enabled=False)
    with ctx:
        loss = model(input_ids=x, labels=x, use_cache=False).loss
    if tracker is not None:
        loss = loss + aux_loss(fakeln_modules(model)["f"].last_std, x, model.config.eos_token_id, 0.1)
    loss.backward()
    if tracker is not None:
        tracker.commit_micro_batch()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    if tracker is not None:
        tracker.end_step()
    return loss


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
        loss = model(input_ids=x, labels=x, use_cache=False).loss
        if tracker is not None:
            loss = loss + aux_loss(fakeln_modules(model)["f"].last_std, x, model.config.eos_token_id, 0.1)
    loss.backward()
    model.zero_grad(set_to_none=True)
    for m in fakeln_modules(model).values():
        m.reset_step()
    return sum(v for k, v in seen.items() if k not in params)


def state_bytes(model) -> int:
    n = sum(p.numel() * p.element_size() for p in model.parameters())
    return 4 * n  # weights + grads + AdamW exp_avg + exp_avg_sq (all fp32)


def quantile(xs: list[float], q: float) -> float:
    """Linear-interpolated q-quantile (as numpy's default) of a non-empty list."""
    s = sorted(xs)
    pos = q * (len(s) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def median_ci(xs: list[float], z: float = 1.96) -> tuple[float, float]:
    """Distribution-free ~95% confidence interval of the median: the order statistics of ranks
    n/2 -+ z*sqrt(n)/2 (binomial normal approximation; no assumption on the shape of the noise)."""
    s = sorted(xs)
    n = len(s)
    half = z * math.sqrt(n) / 2
    lo, hi = max(0, int(math.floor(n / 2 - half))), min(n - 1, int(math.ceil(n / 2 + half)) - 1)
    return s[lo], s[max(lo, hi)]


def ratio_summary(ratios: list[float], max_ci: float) -> dict:
    """Median, IQR, min-max and the median's ~95% CI of per-round ratios; conclusive when the CI's
    half-width is at most max_ci (so that two runs agree within about +-2*max_ci)."""
    q1, med, q3 = quantile(ratios, 0.25), quantile(ratios, 0.5), quantile(ratios, 0.75)
    lo, hi = median_ci(ratios)
    return {"median": med, "q1": q1, "q3": q3, "min": min(ratios), "max": max(ratios), "ci": (lo, hi),
            "conclusive": (hi - lo) / 2 <= max_ci}


def rotations(names: list[str], rounds: int) -> list[list[str]]:
    """Round r runs the variants in `names` rotated by r: each variant takes each position equally often."""
    k = len(names)
    return [names[r % k:] + names[:r % k] for r in range(rounds)]


def main(argv=None) -> int:
    cuda = torch.cuda.is_available()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if cuda else "cpu")
    ap.add_argument("--layers", type=int, default=12 if cuda else 4)
    ap.add_argument("--width", type=int, default=768 if cuda else 256)
    ap.add_argument("--vocab", type=int, default=50257 if cuda else 8192)
    ap.add_argument("--batch", type=int, default=8 if cuda else 4)
    ap.add_argument("--seq", type=int, default=1024 if cuda else 256)
    ap.add_argument("--rounds", type=int, default=20 if cuda else 40,
                    help="rounds; each runs one step of every variant, in an order rotated every round")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--max-ci", type=float, default=0.025,
                    help="a ratio whose median's ~95%% confidence interval has a half-width above this is "
                         "reported as inconclusive (more rounds narrow it)")
    ap.add_argument("--clock", choices=["wall", "cpu"], default=None,
                    help="what to time: wall (default on CUDA) or this process's CPU time (default on CPU: "
                         "other processes on a shared machine disturb it much less than wall time)")
    args = ap.parse_args(argv)
    dev = args.device
    clock_name = args.clock or ("wall" if dev.startswith("cuda") else "cpu")
    clock = time.perf_counter if clock_name == "wall" else time.process_time
    x = torch.randint(0, args.vocab, (args.batch, args.seq), device=dev, generator=None)
    phases = ["live", "qk-removed", "all-removed"]
    models = {"vanilla": build(args, False, "")}
    for ph in phases:
        models[ph] = build(args, True, ph)
    print(f"device={dev} layers={args.layers} width={args.width} vocab={args.vocab} batch={args.batch}x{args.seq} "
          f"rounds={args.rounds} clock={clock_name} torch={torch.__version__} threads={torch.get_num_threads()}")

    for k, (m, o, t) in models.items():  # warm-up
        for _ in range(args.warmup):
            step(m, o, t, x, dev)
    times = {k: [] for k in models}
    for order in rotations(list(models), args.rounds):
        # One step of every variant per round, in a rotating order: machine load that drifts over
        # seconds hits the variants of one round alike, and no variant always runs first or last.
        for k in order:
            m, o, t = models[k]
            if dev.startswith("cuda"):
                torch.cuda.synchronize()
            t0 = clock()
            step(m, o, t, x, dev)
            if dev.startswith("cuda"):
                torch.cuda.synchronize()
            times[k].append(clock() - t0)

    mem = {}
    for k, (m, o, t) in models.items():
        if dev.startswith("cuda"):
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            step(m, o, t, x, dev)
            mem[k] = torch.cuda.max_memory_allocated()
        else:
            mem[k] = state_bytes(m) + saved_bytes(m, t, x)

    tokens = args.batch * args.seq
    print(f"{'variant':12s} {'median s':>9s} {'tokens/s':>9s} | per-round time ratio to vanilla: "
          f"{'median':>6s} {'95% CI':>13s} {'IQR':>13s} {'min-max':>13s} | {'memory MB':>9s} {'ratio':>6s}")
    worst = None
    worst_m = 0.0
    for k in models:
        med = statistics.median(times[k])
        mr = mem[k] / mem["vanilla"]
        if k == "vanilla":
            print(f"{k:12s} {med:9.4f} {tokens / med:9.0f} | {'':61s} | {mem[k] / 2**20:9.1f} {mr:6.3f}")
            continue
        rs = ratio_summary([a / b for a, b in zip(times[k], times["vanilla"])], args.max_ci)
        flag = "" if rs["conclusive"] else "  (spread too large to conclude)"
        print(f"{k:12s} {med:9.4f} {tokens / med:9.0f} | {'':33s}{rs['median']:6.3f} "
              f"{rs['ci'][0]:6.3f}-{rs['ci'][1]:<6.3f} {rs['q1']:6.3f}-{rs['q3']:<6.3f} {rs['min']:6.3f}-{rs['max']:<6.3f} | {mem[k] / 2**20:9.1f} {mr:6.3f}{flag}")
        if worst is None or rs["median"] > worst["median"]:
            worst = rs
        worst_m = max(worst_m, mr)
    verdict = "conclusive" if worst["conclusive"] else "inconclusive"
    print(f"time_ratio={worst['median']:.3f} ci95={worst['ci'][0]:.3f}-{worst['ci'][1]:.3f} "
          f"iqr={worst['q1']:.3f}-{worst['q3']:.3f} memory_ratio={worst_m:.3f} "
          f"({verdict}: worst phase, median over {args.rounds} rounds of the per-round ratio)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
