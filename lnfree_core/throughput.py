"""Training throughput as model FLOPs: tokens/s, achieved TFLOP/s and MFU against the device's bf16 peak.

FLOPs per trained token (the nanoGPT / PaLM estimate, forward + backward):

    F = 6 * N + 12 * L * d * T

N: the parameters that take part in matrix multiplies, i.e. all parameters except the position
embeddings (a tied token embedding counts once: it is the unembedding matmul); L layers, d model
width, T sequence length (the 12 L d T term is attention's QK^T and AV). This counts model FLOPs
only: activation checkpointing's recomputation is not counted, so MFU is the same for a run with or
without it (it is the "model FLOPs utilisation", not the hardware utilisation).

    achieved TFLOP/s = tokens/s * F / 1e12            MFU = achieved / (peak bf16 TFLOP/s x devices)

Peaks are NVIDIA's dense (no sparsity) bf16 tensor-core figures with fp32 accumulation. A device not
in the table (or a CPU) gets tokens/s and TFLOP/s but no MFU.
"""

from __future__ import annotations

import torch
from torch import nn

# Dense bf16 tensor-core peak, TFLOP/s, by a substring of torch.cuda.get_device_name (longest match wins).
BF16_PEAK_TFLOPS: dict[str, float] = {
    "B200": 2250.0,
    "H200": 989.4,
    "GH200": 989.4,
    "H100 PCIe": 756.0,
    "H100 NVL": 835.0,
    "H100": 989.4,  # SXM ("NVIDIA H100 80GB HBM3")
    "H800": 989.4,
    "H20": 148.0,
    "A100": 312.0,
    "A800": 312.0,
    "A40": 149.7,
    "A10G": 70.0,  # AWS's A10G (lower clocks than the A10)
    "A10": 125.0,
    "L40S": 362.1,
    "L40": 181.0,
    "L4": 121.0,
    "RTX 6000 Ada": 364.2,
    "RTX A6000": 154.8,
    "RTX 4090": 165.2,
    "RTX 4080": 97.5,
    "RTX 3090": 71.0,
}


def peak_bf16_tflops(device_name: str | None) -> float | None:
    """The table's dense bf16 peak for a CUDA device name ('NVIDIA H100 80GB HBM3'), else None."""
    if not device_name:
        return None
    hits = [k for k in BF16_PEAK_TFLOPS if k.lower() in device_name.lower()]
    return BF16_PEAK_TFLOPS[max(hits, key=len)] if hits else None


def device_peak(device: torch.device) -> tuple[str, float | None]:
    """(device name, bf16 peak TFLOP/s or None) of a torch device."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        return name, peak_bf16_tflops(name)
    return device.type, None


def matmul_params(model: nn.Module) -> int:
    """N of the FLOPs estimate: every distinct parameter except position embeddings."""
    skip = set()
    for name, mod in model.named_modules():
        if isinstance(mod, nn.Embedding) and name.split(".")[-1] in ("wpe", "embed_positions", "position_embeddings"):
            skip.add(id(mod.weight))
    seen, n = set(), 0
    for p in model.parameters():  # shared (tied) parameters are yielded once
        if id(p) in seen or id(p) in skip:
            continue
        seen.add(id(p))
        n += p.numel()
    return n


def flops_per_token(n_params: int, n_layers: int, d_model: int, seq_len: int) -> float:
    """6 N + 12 L d T: training FLOPs per token (forward and backward)."""
    return 6.0 * n_params + 12.0 * n_layers * d_model * seq_len


def model_flops_per_token(model: nn.Module, seq_len: int) -> float:
    cfg = model.config
    layers = getattr(cfg, "n_layer", None) or getattr(cfg, "num_hidden_layers")
    width = getattr(cfg, "n_embd", None) or getattr(cfg, "hidden_size")
    return flops_per_token(matmul_params(model), int(layers), int(width), seq_len)


class Throughput:
    """Per-row throughput fields for metrics.jsonl."""

    def __init__(self, flops_per_token: float, device: torch.device, n_devices: int = 1):
        self.flops_per_token = flops_per_token
        self.device_name, self.peak = device_peak(device)
        self.n_devices = n_devices

    def fields(self, tokens_per_s: float) -> dict:
        """tokens_per_s, tflops (achieved, all devices together) and mfu (None when the peak is unknown)."""
        tflops = tokens_per_s * self.flops_per_token / 1e12
        mfu = tflops / (self.peak * self.n_devices) if self.peak else None
        return {"tokens_per_s": tokens_per_s, "tflops": tflops, "mfu": mfu}

    def describe(self) -> dict:
        """What the MFU is measured against (logged once per run)."""
        return {"flops_per_token": self.flops_per_token, "device_name": self.device_name,
                "peak_bf16_tflops": self.peak, "n_devices": self.n_devices}
