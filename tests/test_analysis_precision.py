"""Under bf16 autocast the unembedding still runs in float32 (bf16 logits would bias CE)."""

from __future__ import annotations

import torch

from _tiny import tiny_model
from lnfree_core.analysis.ce import per_token_ce
from lnfree_core.analysis.runtime import fp32_logits


def test_bf16_body_keeps_fp32_unembedding():
    m = tiny_model()
    x = torch.randint(0, 127, (2, 24))
    dev = torch.device("cpu")
    logits = fp32_logits(m, x, "bf16", dev)
    assert logits.dtype == torch.float32
    with torch.autocast("cpu", dtype=torch.bfloat16):
        h = m.base_model(input_ids=x).last_hidden_state
    ref = h.float() @ m.lm_head.weight.float().T  # float32 matmul of the same hidden states
    torch.testing.assert_close(logits, ref, atol=1e-5, rtol=1e-5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        naive = m(input_ids=x).logits
    assert naive.dtype == torch.bfloat16  # what an autocast lm_head would have given
    fp32 = per_token_ce(m, x, precision="fp32")
    bf16 = per_token_ce(m, x, precision="bf16")
    assert (bf16 - fp32).abs().mean() < 0.05
