"""The GPU suite: one script, one table, for the day a GPU is lent (under 8 minutes on one GPU).

    python bench/gpu_suite.py              # CUDA: GPT-2 Small shape (12 x 768, vocab 50257), batch 8 x 1024, bf16
    python bench/gpu_suite.py --tiny       # CPU-sized shapes, same code paths (what CI runs)

Rows:
  * train steps of vanilla, LN removal with every block live (tracking sigma) and with every block
    removed, each eager and torch.compile'd per block, each without and with per-block activation
    checkpointing: tokens/s, achieved TFLOP/s, MFU against the device's bf16 peak (6N + 12 L d T
    FLOPs per token, lnfree_core.throughput; checkpointing's recomputation is not counted), peak
    memory, and the time ratio to the vanilla step of the same mode;
  * evaluation: lnfree's per-token CE (chunked float32 unembedding, TF32 on CUDA) against a plain
    transformers loop, tokens/s and their ratio (median of paired rounds), and the two mean CEs;
  * the real trainer (`python -m lnfree_core train`, prefetch, deferred host reads with --log-every 10)
    for a few steps in one process, and under torchrun with DDP and with FSDP using every GPU the
    machine has (with one GPU: skipped; with --tiny: 2 CPU processes over gloo).

Each step row: `--warmup` untimed steps (compilation), then `--steps` timed steps with the device
synchronised around them. Any error in any row is printed with the table and makes the exit code 1.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch
from transformers import GPT2Config, GPT2LMHeadModel

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from eval_throughput import ours, plain_loop, timed  # noqa: E402  (bench/, on sys.path above)
from lnfree_core.optim import make_optimizer  # noqa: E402
from lnfree_core.method.surgery import make_removable  # noqa: E402
from lnfree_core.throughput import Throughput, model_flops_per_token  # noqa: E402
from lnfree_core.method.tracking import SigmaTracker  # noqa: E402
from lnfree_core.train_setup import enable_checkpointing  # noqa: E402
from train_step import step  # noqa: E402  (bench/, on sys.path above)

GPU_SHAPE = dict(layers=12, width=768, heads=12, vocab=50257, batch=8, seq=1024, steps=10, warmup=3, eval_rounds=5,
                 trainer_steps=50)
TINY_SHAPE = dict(layers=2, width=64, heads=2, vocab=512, batch=2, seq=64, steps=2, warmup=1, eval_rounds=3,
                  trainer_steps=10)


def gpt2(shape: dict, device: str):
    torch.manual_seed(0)
    cfg = GPT2Config(n_layer=shape["layers"], n_embd=shape["width"], n_head=shape["heads"], vocab_size=shape["vocab"],
                     n_positions=max(1024, shape["seq"]), resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                     bos_token_id=shape["vocab"] - 1, eos_token_id=shape["vocab"] - 1)
    return GPT2LMHeadModel(cfg).to(device)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


# ---------------------------------------------------------------------------------------- train steps
def train_step_row(shape: dict, device: str, variant: str, compiled: bool, ckpt: bool, backend: str) -> dict:
    """Time `steps` optimizer steps of one variant (as the trainer runs them) after `warmup` steps."""
    model = gpt2(shape, device).train()
    tracker = None
    if variant != "vanilla":
        mods = make_removable(model)
        mods["f"].capture_std = True
        if variant == "lnfree-removed":
            for m in mods.values():
                m.remove(1.0)
        tracker = SigmaTracker(model)
    if ckpt:
        enable_checkpointing(model)
    if compiled:
        for block in model.transformer.h:
            block.compile(backend=backend)
    opt = make_optimizer(model, 1e-4, 0.01)
    x = torch.randint(0, shape["vocab"], (shape["batch"], shape["seq"]), device=device,
                      generator=torch.Generator(device=device).manual_seed(1))
    t0 = time.perf_counter()
    for _ in range(shape["warmup"]):
        loss = step(model, opt, tracker, x, device)
    sync(device)
    warm_s = time.perf_counter() - t0
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(shape["steps"]):
        loss = step(model, opt, tracker, x, device)
    sync(device)
    dt = (time.perf_counter() - t0) / shape["steps"]
    if not math.isfinite(float(loss.detach())):
        raise RuntimeError(f"non-finite loss {float(loss.detach())}")
    tps = shape["batch"] * shape["seq"] / dt
    perf = Throughput(model_flops_per_token(model, shape["seq"]), torch.device(device)).fields(tps)
    mem = torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else None
    del model, opt
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return {"s_per_step": dt, **perf, "peak_gib": mem, "warmup_s": warm_s}


# ---------------------------------------------------------------------------------------- evaluation
def eval_row(shape: dict, device: str) -> dict:
    dev = torch.device(device)
    model = gpt2(shape, device).eval()
    prec = "bf16" if dev.type == "cuda" else "fp32"
    n = shape["batch"] * (4 if dev.type == "cuda" else 1)
    tokens = torch.randint(0, shape["vocab"], (n, shape["seq"]), generator=torch.Generator().manual_seed(2))
    args = (model, tokens, shape["batch"], prec, dev)
    _, _, ce_ours = timed(ours, dev, *args)
    _, _, ce_plain = timed(plain_loop, dev, *args)
    ratios, rates = [], []
    for r in range(shape["eval_rounds"]):
        order = [ours, plain_loop] if r % 2 == 0 else [plain_loop, ours]
        walls = {fn: timed(fn, dev, *args)[0] for fn in order}
        ratios.append(walls[plain_loop] / walls[ours])
        rates.append(n * shape["seq"] / walls[ours])
    return {"tokens_per_s": statistics.median(rates), "ratio": statistics.median(ratios),
            "ce_ours": ce_ours, "ce_plain": ce_plain}


# ---------------------------------------------------------------------------------------- the real trainer
def write_fixture(root: Path, shape: dict, n_rows: int) -> tuple[Path, Path]:
    model_dir, data = root / "model", root / "tokens.jsonl"
    gpt2(shape, "cpu").save_pretrained(str(model_dir))
    g = torch.Generator().manual_seed(3)
    with open(data, "w") as fh:
        for _ in range(n_rows):
            fh.write(json.dumps({"input_ids": torch.randint(0, shape["vocab"] - 1, (shape["seq"],), generator=g).tolist()}) + "\n")
    return model_dir, data


def trainer_row(shape: dict, device: str, fixture: tuple[Path, Path], out: Path, nproc: int, strategy: str,
                timeout: float) -> dict:
    model_dir, data = fixture
    args = ["-m", "lnfree_core", "train", "--model", str(model_dir), "--dataset", str(data), "--schedule", "auto",
            "--out", str(out), "--max-steps", str(shape["trainer_steps"]), "--batch-size", str(shape["batch"]),
            "--grad-accum", "1", "--seq-len", str(shape["seq"]), "--save-every", "100000", "--log-every", "10",
            "--device", "cuda" if device.startswith("cuda") else "cpu"]
    if nproc > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc), *args,
               "--distributed", strategy]
    else:
        cmd = [sys.executable, *args]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, cwd=str(REPO))
    if proc.returncode != 0:
        said = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:") or "Error:" in ln]
        raise RuntimeError(f"exit code {proc.returncode}: " + (" | ".join(said[-3:]) or proc.stderr[-1500:]))
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    steps = [r for r in rows if r.get("type") == "step"]
    if len(steps) != shape["trainer_steps"]:
        raise RuntimeError(f"{len(steps)} step rows logged, expected {shape['trainer_steps']}")
    tail = steps[len(steps) // 2:]  # after start-up and compilation
    med = lambda k: statistics.median(r[k] for r in tail) if all(r.get(k) is not None for r in tail) else None  # noqa: E731
    return {"tokens_per_s": med("tokens_per_s"), "tflops": med("tflops"), "mfu": med("mfu"), "loss": steps[-1]["loss"]}


# ---------------------------------------------------------------------------------------- table
def fmt(v, spec: str) -> str:
    return "-" if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, spec)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tiny", action="store_true", help="tiny shapes on the CPU (CI); no GPU needed")
    ap.add_argument("--device", default=None, help="default: cuda if available (cpu with --tiny)")
    ap.add_argument("--compile-backend", default=None,
                    help="torch.compile backend (default: inductor on CUDA, aot_eager with --tiny: fast to compile)")
    ap.add_argument("--budget-s", type=float, default=450.0,
                    help="rows not started within this many seconds are skipped (reported, not an error)")
    args = ap.parse_args(argv)
    device = args.device or ("cpu" if args.tiny or not torch.cuda.is_available() else "cuda")
    if device.startswith("cuda") and not torch.cuda.is_available():
        print("error: no CUDA GPU is visible; run with --tiny for the CPU version", file=sys.stderr)
        return 2
    shape = TINY_SHAPE if args.tiny or not device.startswith("cuda") else GPU_SHAPE
    backend = args.compile_backend or ("inductor" if device.startswith("cuda") else "aot_eager")
    if device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = True  # fp32 matmuls outside autocast (the optimizer's are not matmuls)
    name = torch.cuda.get_device_name() if device.startswith("cuda") else "cpu"
    n_gpus = torch.cuda.device_count() if device.startswith("cuda") else 0
    print(f"gpu_suite: device {name} (x{max(n_gpus, 1)}), torch {torch.__version__}, model {shape['layers']}x"
          f"{shape['width']} vocab {shape['vocab']}, batch {shape['batch']}x{shape['seq']}, bf16 autocast "
          f"{'on' if device.startswith('cuda') else 'off (fp32 on CPU)'}, compile backend {backend}", flush=True)
    start = time.perf_counter()
    errors: list[str] = []
    skipped: list[str] = []

    def guarded(label, fn, *a):
        if time.perf_counter() - start > args.budget_s:
            skipped.append(label)
            return None
        try:
            return fn(*a)
        except Exception as e:  # reported with the table; the exit code says it failed
            errors.append(f"{label}: {type(e).__name__}: {e}")
            traceback.print_exc()
            return None

    print(f"\n{'train step':34s} {'s/step':>8s} {'tokens/s':>10s} {'TFLOP/s':>8s} {'MFU':>6s} {'peak GiB':>8s} "
          f"{'vs vanilla':>10s} {'warm-up s':>9s}", flush=True)
    for compiled in (False, True):
        for ckpt in (False, True):
            base = None
            for variant in ("vanilla", "lnfree-live", "lnfree-removed"):
                label = f"{variant} {'compiled' if compiled else 'eager'}{' +ckpt' if ckpt else ''}"
                r = guarded(label, train_step_row, shape, device, variant, compiled, ckpt, backend)
                if r is None:
                    print(f"{label:34s} {'(failed)' if label in ' '.join(errors) else '(skipped)'}", flush=True)
                    continue
                if variant == "vanilla":
                    base = r["s_per_step"]
                ratio = r["s_per_step"] / base if base else None
                print(f"{label:34s} {r['s_per_step']:8.4f} {r['tokens_per_s']:10,.0f} {fmt(r['tflops'], '8.3g')} "
                      f"{fmt(r['mfu'], '6.1%')} {fmt(r['peak_gib'], '8.2f')} {fmt(ratio, '10.3f')} {r['warmup_s']:9.1f}",
                      flush=True)

    print(f"\n{'evaluation (per-token CE)':34s} {'tokens/s':>10s} {'vs plain':>8s} {'mean CE ours':>13s} {'plain':>9s}")
    r = guarded("eval", eval_row, shape, device)
    if r is not None:
        print(f"{'lnfree per_token_ce':34s} {r['tokens_per_s']:10,.0f} {r['ratio']:8.3f} {r['ce_ours']:13.5f} "
              f"{r['ce_plain']:9.5f}", flush=True)

    print(f"\n{'real trainer (log_every 10)':34s} {'tokens/s':>10s} {'TFLOP/s':>8s} {'MFU':>6s} {'last loss':>9s}")
    with tempfile.TemporaryDirectory(prefix="lnfree-gpu-suite-") as tmp:
        tmp = Path(tmp)
        n_rows = shape["batch"] * max(2, n_gpus) * (shape["trainer_steps"] + 2)
        fixture = guarded("fixture", write_fixture, tmp, shape, n_rows)
        runs = [("1 process", 1, "ddp")]
        nproc = n_gpus if n_gpus >= 2 else (2 if not device.startswith("cuda") else 0)
        if nproc:
            runs += [(f"torchrun x{nproc} DDP", nproc, "ddp"), (f"torchrun x{nproc} FSDP", nproc, "fsdp")]
        else:
            print("  (DDP/FSDP rows skipped: one GPU; they need two or more)")
        for label, n, strategy in runs if fixture else []:
            out = tmp / f"run-{n}-{strategy}"
            r = guarded(label, trainer_row, shape, device, fixture, out, n, strategy, max(60.0, args.budget_s))
            if r is None:
                print(f"{label:34s} {'(failed)' if label in ' '.join(errors) else '(skipped)'}", flush=True)
                continue
            print(f"{label:34s} {fmt(r['tokens_per_s'], '10,.0f')} {fmt(r['tflops'], '8.3g')} {fmt(r['mfu'], '6.1%')} "
                  f"{r['loss']:9.4f}", flush=True)

    total = time.perf_counter() - start
    print(f"\ntotal {total:.0f} s; skipped (time budget): {skipped or 'none'}; errors: {len(errors)}")
    for e in errors:
        print(f"ERROR {e}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
