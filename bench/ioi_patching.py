"""Time activation vs attribution patching of resid_pre on IOI (section 5.2) for a GPT-2-Small-shaped
model (random weights unless --model is given: the cost does not depend on the weights).

    python bench/ioi_patching.py --n 480                 # the paper's set; minutes on one GPU
    python bench/ioi_patching.py --n 16 --device cpu     # a quick look on a CPU

Prints the seconds of each phase, the (prompt, site) pairs patched per second and
`activation_over_attribution=<x>`: how much more activation patching costs than attribution patching.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from transformers import GPT2Config, GPT2LMHeadModel

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lnfree_core.analysis.ioi import build_ioi_prompts  # noqa: E402
from lnfree_core.analysis.patching import patch_residual  # noqa: E402
from lnfree_core.analysis.runtime import resolve_device  # noqa: E402
from lnfree_core.models import load_model  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", help="model spec (default: random GPT-2 Small)")
    ap.add_argument("--n", type=int, default=480)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "auto"])
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--rows-per-forward", type=int, default=256)
    args = ap.parse_args()
    device = resolve_device(args.device)
    if args.model:
        model = load_model(args.model, device=device).model
    else:
        torch.manual_seed(0)
        model = GPT2LMHeadModel(GPT2Config()).eval().to(device)
    p = build_ioi_prompts(args.n)
    t0 = time.perf_counter()
    res = patch_residual(model, p.clean, p.corrupt, p.io, p.s, batch_size=args.batch_size,
                         rows_per_forward=args.rows_per_forward, precision=args.precision)
    total = time.perf_counter() - t0
    L, T = res.act.shape[1:]
    sites = L * (T - p.positions["S2"])  # every layer at S2 and after it (earlier sites are equal: not run)
    s = res.seconds
    print(f"device={device} n={args.n} layers={L} positions={T} patched_sites={sites} total_s={total:.2f}")
    print(f"clean_s={s['clean']:.2f} attribution_s={s['attribution']:.2f} activation_s={s['activation']:.2f} "
          f"pairs_per_s={args.n * sites / max(s['activation'], 1e-9):.0f}")
    print(f"activation_over_attribution={s['activation'] / max(s['attribution'], 1e-9):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
