"""How exact the stock ("eps trick") export form is as a token's std grows, against the folded form.

For each std s: a [256, 768] batch of tokens with per-token std exactly s, pushed through a stock
LayerNorm with eps 1e12 and weight gamma * 1e6 / sigma_bar (the export) and through the affine map
(x - mu) * gamma / sigma_bar (FakeLN, which the folded form computes with no epsilon at all), both in
float32, against float64 FakeLN. Prints the measured max relative error and the theory s^2 / 2e12.

    python bench/eps_trick_precision.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lnfree_core.export_precision import EPS_TRICK_STD_LIMIT, eps_trick_relative_error

EPS = 1e12


def main() -> None:
    torch.manual_seed(0)
    d, sigma = 768, 50.0
    gamma = 1.0 + 0.1 * torch.randn(d, dtype=torch.float64)
    z = torch.randn(256, d, dtype=torch.float64)
    z = (z - z.mean(-1, keepdim=True)) / z.std(-1, correction=0, keepdim=True)
    print(f"{'std':>8} {'theory s^2/2E':>14} {'stock fp64':>11} {'stock fp32':>11} {'folded fp32':>12}")
    for std in (1.0, 10.0, 100.0, EPS_TRICK_STD_LIMIT, 1e3, 3e3, 1e4, 3e4):
        x = z * std
        exact = (x - x.mean(-1, keepdim=True)) * gamma / sigma
        scale = exact.abs().max()
        w = gamma * EPS**0.5 / sigma
        stock64 = torch.nn.functional.layer_norm(x, (d,), weight=w, eps=EPS)
        x32 = x.float()
        stock32 = torch.nn.functional.layer_norm(x32, (d,), weight=w.float(), eps=EPS).double()
        folded32 = ((x32 - x32.mean(-1, keepdim=True)) * (gamma / sigma).float()).double()
        errs = [float((y - exact).abs().max() / scale) for y in (stock64, stock32, folded32)]
        print(f"{std:8.0f} {eps_trick_relative_error(std, EPS):14.2e} {errs[0]:11.2e} {errs[1]:11.2e} {errs[2]:12.2e}")


if __name__ == "__main__":
    main()
