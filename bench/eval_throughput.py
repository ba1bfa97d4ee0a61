"""Throughput of lnfree's CE evaluation against a plain transformers loop, side by side in one run.

    python bench/eval_throughput.py                 # GPT-2-small-shaped random model on CUDA, small one on CPU
    python bench/eval_throughput.py --device cpu --layers 2 --d-model 128 --repeats 41

Both sides run the same random GPT2LMHeadModel (eval mode) on the same random tokens with the same
batch size and precision (bf16 autocast on CUDA, fp32 on CPU):

  * ours:  lnfree_core.analysis.ce.per_token_ce -- per-token losses kept on the device, one host
           transfer at the end (it returns every token's loss);
  * plain: for each batch `model(input_ids=x, labels=x).loss` (transformers' own shifted CE),
           the batch means collected on the device and averaged at the end (it returns one number).

After one warm-up pass of each, the two alternate for --repeats rounds (the order flips every round,
so drift on a shared machine hits both alike); tokens/s = n_sequences * seq_len / wall time, with
the device synchronised around each timed pass. The last line is `throughput_ratio=<ours / plain>`:
the median over rounds of the ratio of the two passes' tokens/s in that round (pairing the passes of
one round cancels slow drift in the machine's load). On CPU the process CPU time per pass is shown as
well: it is much less disturbed by other processes on a shared machine than wall time.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from transformers import GPT2Config, GPT2LMHeadModel

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lnfree_core.analysis.ce import per_token_ce  # noqa: E402
from lnfree_core.analysis.runtime import autocast, resolve_device, resolve_precision  # noqa: E402

GPU_DEFAULTS = dict(layers=12, d_model=768, heads=12, vocab=50257, seq_len=1024, batch_size=8, n_batches=8, repeats=5)
# CPU: short passes and many rounds, so that the two passes of a round see the same machine load.
CPU_DEFAULTS = dict(layers=2, d_model=128, heads=4, vocab=50257, seq_len=256, batch_size=4, n_batches=1, repeats=41)


def build_model(layers: int, d_model: int, heads: int, vocab: int, seq_len: int, device: torch.device):
    torch.manual_seed(0)
    cfg = GPT2Config(n_layer=layers, n_embd=d_model, n_head=heads, vocab_size=vocab, n_positions=max(seq_len, 1024),
                     bos_token_id=vocab - 1, eos_token_id=vocab - 1)
    return GPT2LMHeadModel(cfg).to(device).eval()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def plain_loop(model, tokens: torch.Tensor, batch_size: int, precision: str, device: torch.device) -> float:
    losses = []
    for start in range(0, tokens.shape[0], batch_size):
        x = tokens[start:start + batch_size].to(device)
        with autocast(precision, device):
            losses.append(model(input_ids=x, labels=x, use_cache=False).loss)
    return float(torch.stack(losses).mean())


def ours(model, tokens: torch.Tensor, batch_size: int, precision: str, device: torch.device) -> float:
    return float(per_token_ce(model, tokens, batch_size=batch_size, precision=precision).double().mean())


def timed(fn, device, *args) -> tuple[float, float, float]:
    """(wall seconds, process CPU seconds, value)."""
    sync(device)
    t0, c0 = time.perf_counter(), time.process_time()
    value = fn(*args)
    sync(device)
    return time.perf_counter() - t0, time.process_time() - c0, value


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    for k in GPU_DEFAULTS:
        p.add_argument("--" + k.replace("_", "-"), type=int, help="default: GPU %s / CPU %s" % (GPU_DEFAULTS[k], CPU_DEFAULTS[k]))
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    args = p.parse_args(argv)
    device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    defaults = GPU_DEFAULTS if device.type == "cuda" else CPU_DEFAULTS
    cfg = {k: getattr(args, k) if getattr(args, k) is not None else v for k, v in defaults.items()}
    prec = resolve_precision(args.precision, device)
    model = build_model(cfg["layers"], cfg["d_model"], cfg["heads"], cfg["vocab"], cfg["seq_len"], device)
    n = cfg["batch_size"] * cfg["n_batches"]
    tokens = torch.randint(0, cfg["vocab"], (n, cfg["seq_len"]), generator=torch.Generator().manual_seed(1))
    n_tok = n * cfg["seq_len"]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    print(f"device {name}, precision {prec}, model {cfg['layers']}x{cfg['d_model']} vocab {cfg['vocab']}, "
          f"{n} sequences x {cfg['seq_len']} tokens, batch {cfg['batch_size']}, torch {torch.__version__}")
    run_args = (model, tokens, cfg["batch_size"], prec, device)
    _, _, v_ours = timed(ours, device, *run_args)  # warm-up (allocator, kernels)
    _, _, v_plain = timed(plain_loop, device, *run_args)
    print(f"mean CE: ours {v_ours:.6f}, plain {v_plain:.6f} (|diff| {abs(v_ours - v_plain):.2e})")
    rates: dict[str, list[float]] = {"ours": [], "plain": []}
    cpu: dict[str, list[float]] = {"ours": [], "plain": []}
    for r in range(cfg["repeats"]):
        order = [("ours", ours), ("plain", plain_loop)]
        for label, fn in order if r % 2 == 0 else order[::-1]:
            wall, proc, _ = timed(fn, device, *run_args)
            rates[label].append(n_tok / wall)
            cpu[label].append(proc)
        print(f"round {r + 1}: ours {rates['ours'][-1]:10.0f} tok/s   plain {rates['plain'][-1]:10.0f} tok/s   "
              f"ratio {rates['ours'][-1] / rates['plain'][-1]:.3f}")
    med = {k: statistics.median(v) for k, v in rates.items()}
    paired = statistics.median(o / p for o, p in zip(rates["ours"], rates["plain"]))
    print(f"median: ours {med['ours']:.0f} tok/s, plain {med['plain']:.0f} tok/s "
          f"(ratio of medians {med['ours'] / med['plain']:.3f})")
    if device.type == "cpu":  # host CPU time is less disturbed by other processes on a shared machine
        print(f"process CPU time per pass (median): ours {statistics.median(cpu['ours']):.2f} s, "
              f"plain {statistics.median(cpu['plain']):.2f} s "
              f"(ratio {statistics.median(cpu['plain']) / statistics.median(cpu['ours']):.3f})")
    print(f"throughput_ratio={paired:.3f}")  # median over rounds of the paired tokens/s ratio
    return 0


if __name__ == "__main__":
    sys.exit(main())
