"""load_model: every source lnfree meets, offline behaviour, Hub-style LN-free exports."""

from __future__ import annotations

import time

import pytest
import torch

from _tiny import tiny_model
from lnfree_core.method.adapters.gpt2 import EXPORT_EPS
from lnfree_core.models import load_model
from lnfree_core.method.surgery import fakeln_modules


def test_unknown_hub_model_offline_fails_fast_with_advice(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t0 = time.time()
    with pytest.raises(FileNotFoundError, match="demo build"):
        load_model("schaeff/gpt2-small_LNFree300")
    assert time.time() - t0 < 10


def test_local_folder_without_safetensors_is_refused(tmp_path):
    m = tiny_model()
    m.save_pretrained(str(tmp_path / "m"))
    for f in (tmp_path / "m").glob("*.safetensors"):
        f.unlink()
    with pytest.raises(FileNotFoundError, match="only safetensors"):
        load_model(str(tmp_path / "m"))


def test_hub_style_lnfree_export_is_recognised_and_equivalent(tmp_path):
    """A file in the schaeff/gpt2-*_LNFree style: eps 1e12, LN weight = gamma * 1e6 / sigma."""
    torch.manual_seed(0)
    m = tiny_model()
    sigmas = {}
    with torch.no_grad():
        for i, block in enumerate(m.transformer.h):
            for j, ln in enumerate((block.ln_1, block.ln_2)):
                s = 0.5 + i + 0.3 * j
                sigmas[(i, j)] = s
                ln.weight.mul_(EXPORT_EPS**0.5 / s)
        m.transformer.ln_f.weight.mul_(EXPORT_EPS**0.5 / 2.0)
        for mod in m.modules():
            if isinstance(mod, torch.nn.LayerNorm):
                mod.eps = EXPORT_EPS
    m.config.layer_norm_epsilon = EXPORT_EPS
    m.save_pretrained(str(tmp_path / "hub-style"))
    loaded = load_model(str(tmp_path / "hub-style"))
    assert loaded.ln_free and all(mod.is_removed for mod in fakeln_modules(loaded.model).values())
    x = torch.randint(0, 127, (2, 20))
    with torch.no_grad():
        ref = m(x).logits
        out = loaded.model(x).logits
        # in bf16 it does not overflow (the stock form's 1e6-scaled weights would in fp16)
        half = load_model(str(tmp_path / "hub-style"), dtype=torch.float16).model(x).logits.float()
    assert (out - ref).abs().max().item() < 1e-4
    assert torch.isfinite(half).all()
