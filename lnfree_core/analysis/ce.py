"""Per-token cross-entropy of a causal LM on token sequences.

For a sequence x_0 .. x_{T-1} the model predicts token t+1 from x_0..x_t; the per-token loss is

    CE[i, t] = -log softmax(logits[i, t])[x_{i, t+1}]        t = 0 .. T-2   (natural log, nats)

so each sequence of T tokens gives T-1 losses: the first token has no prediction, and `losses[:, t]`
belongs to the token at position t+1. EOT handling: none. A token after an EOT (<|endoftext|>) is
predicted like any other token from the whole preceding context, EOT included, and an EOT target is
scored like any other target; nothing is masked (as in the paper's evaluation on fixed-length packed
sequences).

The evaluation is batched, runs `model.eval()` (no dropout), under bf16 autocast on CUDA and in fp32 on
CPU (`precision`). The unembedding and the log-softmax stay in float32 (bf16 logits would bias mean CE
by ~0.01 nats) but run in chunks of positions (`chunked_token_ce`): the [batch, pos, vocab] logits are
never held whole, and on CUDA the float32 unembedding uses TF32 tensor cores (float32 accumulation
and output). Losses accumulate in a device tensor and come to the host once at the end: no
host-device synchronisation per batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .runtime import Progress, analysis_inputs, autocast, iter_batches, tf32_matmuls

CHUNK_ELEMENTS = 2**25  # logits per chunk (128 MiB in float32): 667 positions of a 50,257-token vocabulary


def token_ce_from_logits(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """CE of next-token predictions: logits [batch, pos, vocab], x [batch, pos] -> [batch, pos - 1] fp32.

    The targets are shifted instead of the logits (the last position gets ignore_index and is dropped
    afterwards), so the [batch, pos, vocab] logits are used as a view, never copied.
    """
    b, t, v = logits.shape
    target = F.pad(x[:, 1:], (0, 1), value=-100)  # [batch, pos]; the last position predicts nothing
    ce = F.cross_entropy(logits.reshape(-1, v).float(), target.reshape(-1), reduction="none")  # [batch * pos]
    return ce.view(b, t)[:, :-1]


def ce_and_entropy_from_logits(logits: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(CE, H) per predicting position, each [batch, pos - 1] fp32.

    H[i, t] = -sum_v p_v log p_v with p = softmax(logits[i, t]): the entropy (nats) of the output
    distribution at the same positions whose CE is scored.
    """
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)  # [batch, pos - 1, vocab]
    ce = -logp.gather(-1, x[:, 1:, None]).squeeze(-1)  # [batch, pos - 1]
    ent = -(logp.exp() * logp).sum(-1)  # [batch, pos - 1]
    return ce, ent


@torch.no_grad()
def per_token_ce(model: nn.Module, tokens, *, batch_size: int = 8, precision: str = "auto",
                 progress: Progress | None = None) -> torch.Tensor:
    """Per-token CE of `model` on `tokens` [n, seq_len]: a CPU float32 tensor [n, seq_len - 1].

    The model runs on its own device; `precision` is "auto" (bf16 autocast on CUDA, fp32 on CPU),
    "fp32" or "bf16". `progress(done, total)` counts sequences.
    """
    tokens, device, prec = analysis_inputs(model, tokens, precision)
    model.eval()
    n, seq_len = tokens.shape
    out = torch.empty((n, seq_len - 1), dtype=torch.float32, device=device)  # [n, seq_len - 1]
    for start, stop, x in iter_batches(tokens, batch_size, device, progress):
        with autocast(prec, device):
            h = model.base_model(input_ids=x, use_cache=False).last_hidden_state  # [batch, pos, d_model]
        out[start:stop] = chunked_token_ce(model, h, x)
    return out.cpu()


def chunked_token_ce(model: nn.Module, h: torch.Tensor, x: torch.Tensor,
                     chunk_elements: int = CHUNK_ELEMENTS) -> torch.Tensor:
    """CE of next-token predictions from final hidden states: h [batch, pos, d_model], x [batch, pos]
    -> [batch, pos - 1] float32, with the unembedding and log-softmax in float32, a chunk of positions
    at a time (at most `chunk_elements` logits alive), on TF32 tensor cores on CUDA."""
    head = model.get_output_embeddings()
    b, t, d = h.shape
    hs = h[:, :-1].reshape(-1, d)  # [batch * (pos - 1), d_model]: positions that predict a token
    target = x[:, 1:].reshape(-1)  # [batch * (pos - 1)]
    w = head.weight.float()  # [vocab, d_model]
    bias = getattr(head, "bias", None)
    bias = None if bias is None else bias.float()
    out = torch.empty(hs.shape[0], dtype=torch.float32, device=h.device)  # [batch * (pos - 1)]
    step = max(1, chunk_elements // w.shape[0])
    with torch.autocast(device_type=h.device.type, enabled=False), tf32_matmuls(h.device):
        for s in range(0, hs.shape[0], step):
            logits = F.linear(hs[s:s + step].float(), w, bias)  # [chunk, vocab] float32
            out[s:s + step] = F.cross_entropy(logits, target[s:s + step], reduction="none")
    return out.view(b, t - 1)
