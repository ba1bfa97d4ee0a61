"""GPT-NeoX (Pythia), Llama, Qwen2 and Qwen3 adapters on tiny random-init models (no downloads).

For each family: the surgery keeps the logits while every block is live; with every block removed at a
known sigma_bar the model equals a forward pass written here from the definitions (paper eq. 2 for
LayerNorm, its RMSNorm analogue x / sigma_bar * gamma); the stock export equals the FakeLN model and
loads back as removed blocks; partly removed and out-of-range exports are refused.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch

from _tiny_families import VARIANTS, tiny_family_model
from lnfree_core.method.adapters import adapter_for
from lnfree_core.method.fakermsnorm import FakeRMSNorm
from lnfree_core.method.surgery import fakeln_modules, make_removable, remove_block

TOKENS = torch.randint(0, 1024, (2, 24), generator=torch.Generator().manual_seed(1))


def _logits(model, x=TOKENS):
    with torch.no_grad():
        return model(x).logits.double()


# ------------------------------------------------------------------ independent forward (float64)
def _rope(x, ndims, theta):
    """Rotary embedding on the first `ndims` dims of x [B, H, T, hs] (rotate-half convention)."""
    t = x.shape[2]
    inv = 1.0 / theta ** (torch.arange(0, ndims, 2, dtype=torch.float64) / ndims)  # [ndims / 2]
    ang = torch.arange(t, dtype=torch.float64)[:, None] * inv[None]  # [T, ndims / 2]
    cos, sin = torch.cat([ang.cos()] * 2, -1), torch.cat([ang.sin()] * 2, -1)  # [T, ndims]
    xr, xp = x[..., :ndims], x[..., ndims:]
    x1, x2 = xr[..., : ndims // 2], xr[..., ndims // 2:]
    return torch.cat([xr * cos + torch.cat([-x2, x1], -1) * sin, xp], -1)


def _attend(q, k, v):
    """Causal softmax attention; q [B, H, T, hs], k/v [B, H_kv, T, hs] (GQA: kv head j serves H/H_kv heads)."""
    rep = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1)
    s = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])  # [B, H, T, T]
    t = q.shape[2]
    s = s.masked_fill(torch.triu(torch.ones(t, t, dtype=torch.bool), 1), float("-inf"))
    z = s.softmax(-1) @ v  # [B, H, T, hs]
    return z.transpose(1, 2).reshape(q.shape[0], t, -1)  # [B, T, H * hs]


def _reference(stock, sig, x=TOKENS):
    """Logits of the fully LN-free model, from the stock weights and the frozen sigmas `sig`."""
    c = stock.config
    p = {k: v.double() for k, v in stock.state_dict().items()}
    w_u = stock.get_output_embeddings().weight.double()  # [vocab, d]
    theta = float(c.rope_parameters["rope_theta"])
    b_, t = x.shape
    if c.model_type == "gpt_neox":
        ln = lambda h, g, b, s: (h - h.mean(-1, keepdim=True)) / s * g + b  # noqa: E731  eq. 2
        h_, hs = c.num_attention_heads, c.hidden_size // c.num_attention_heads
        nd = int(hs * c.rope_parameters.get("partial_rotary_factor", 1.0))
        h = p["gpt_neox.embed_in.weight"][x]
        for l in range(c.num_hidden_layers):
            q_ = f"gpt_neox.layers.{l}."
            g1, b1 = p[q_ + "input_layernorm.weight"], p[q_ + "input_layernorm.bias"]
            w, bias = p[q_ + "attention.query_key_value.weight"], p[q_ + "attention.query_key_value.bias"]
            qkv_qk = (ln(h, g1, b1, sig[f"qk.{l}"]) @ w.T + bias).view(b_, t, h_, 3 * hs)
            qkv_v = (ln(h, g1, b1, sig[f"v.{l}"]) @ w.T + bias).view(b_, t, h_, 3 * hs)
            q, k, v = qkv_qk[..., :hs], qkv_qk[..., hs:2 * hs], qkv_v[..., 2 * hs:]
            q, k, v = (a.transpose(1, 2) for a in (q, k, v))
            z = _attend(_rope(q, nd, theta), _rope(k, nd, theta), v)
            attn = z @ p[q_ + "attention.dense.weight"].T + p[q_ + "attention.dense.bias"]
            mid = h if c.use_parallel_residual else h + attn  # the MLP norm reads x (parallel) or x + attn
            m = ln(mid, p[q_ + "post_attention_layernorm.weight"], p[q_ + "post_attention_layernorm.bias"],
                   sig[f"mlp.{l}"])
            m = torch.nn.functional.gelu(m @ p[q_ + "mlp.dense_h_to_4h.weight"].T + p[q_ + "mlp.dense_h_to_4h.bias"])
            mlp = m @ p[q_ + "mlp.dense_4h_to_h.weight"].T + p[q_ + "mlp.dense_4h_to_h.bias"]
            h = h + attn + mlp
        out = ln(h, p["gpt_neox.final_layer_norm.weight"], p["gpt_neox.final_layer_norm.bias"], sig["f"])
        return out @ w_u.T
    rms = lambda h, g, s: h / s * g  # noqa: E731  FakeRMSNorm, removed
    hd = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    h = p["model.embed_tokens.weight"][x]
    for l in range(c.num_hidden_layers):
        q_ = f"model.layers.{l}."
        g1 = p[q_ + "input_layernorm.weight"]

        def proj(name, a):
            y = a @ p[q_ + f"self_attn.{name}.weight"].T
            return y + p[q_ + f"self_attn.{name}.bias"] if q_ + f"self_attn.{name}.bias" in p else y

        q = proj("q_proj", rms(h, g1, sig[f"qk.{l}"])).view(b_, t, -1, hd)
        k = proj("k_proj", rms(h, g1, sig[f"qk.{l}"])).view(b_, t, -1, hd)
        v = proj("v_proj", rms(h, g1, sig[f"v.{l}"])).view(b_, t, -1, hd)
        if c.model_type == "qwen3":  # per-head q_norm / k_norm, frozen too
            q = rms(q, p[q_ + "self_attn.q_norm.weight"], sig[f"qn.{l}"])
            k = rms(k, p[q_ + "self_attn.k_norm.weight"], sig[f"kn.{l}"])
        q, k, v = (a.transpose(1, 2) for a in (q, k, v))
        z = _attend(_rope(q, hd, theta), _rope(k, hd, theta), v)
        h = h + z @ p[q_ + "self_attn.o_proj.weight"].T
        m = rms(h, p[q_ + "post_attention_layernorm.weight"], sig[f"mlp.{l}"])
        act = torch.nn.functional.silu(m @ p[q_ + "mlp.gate_proj.weight"].T) * (m @ p[q_ + "mlp.up_proj.weight"].T)
        h = h + act @ p[q_ + "mlp.down_proj.weight"].T  # SwiGLU
    return rms(h, p["model.norm.weight"], sig["f"]) @ w_u.T


def _remove_all(model):
    sig = {}
    for i, (name, m) in enumerate(fakeln_modules(model).items()):
        sig[name] = 0.6 + 0.17 * i
        m.remove(sig[name])
    return sig


# ------------------------------------------------------------------ tests
@pytest.mark.parametrize("family", VARIANTS)
def test_surgery_keeps_logits_while_live_and_tracks_every_block(family):
    model = tiny_family_model(family)
    before = _logits(model)
    fakes = make_removable(model)
    names = set(fakes)
    expected = {f"{k}.{l}" for k in ("mlp", "qk", "v") for l in range(2)} | {"f"}
    if family == "qwen3":
        expected |= {f"{k}.{l}" for k in ("qn", "kn") for l in range(2)}
    assert names == expected
    if not family.startswith("gpt_neox"):
        assert all(isinstance(m, FakeRMSNorm) for m in fakes.values())
    assert (_logits(model) - before).abs().max() < 1e-6 * before.abs().max()
    assert before.abs().max() > 0.1  # not trivially small logits
    make_removable(model)  # idempotent
    assert set(fakeln_modules(model)) == names
    model.train()
    model(TOKENS)
    assert all(m._pending is not None for m in fakes.values())  # every block recorded its sigma_{b,s}


@pytest.mark.parametrize("family", VARIANTS)
def test_all_removed_equals_independent_forward(family):
    model = tiny_family_model(family)
    stock = copy.deepcopy(model)
    make_removable(model)
    sig = _remove_all(model)
    ref = _reference(stock, sig)
    got = _logits(model)
    assert (got - _logits(stock)).abs().max() > 1e-2  # freezing sigma changed the function
    assert (got - ref).abs().max() < 1e-5 * ref.abs().max(), family


@pytest.mark.parametrize("family", VARIANTS)
def test_export_is_a_stock_model_with_the_same_logits_and_loads_back(family, tmp_path):
    from transformers import AutoModelForCausalLM

    from lnfree_core.models import load_model

    model = tiny_family_model(family)
    make_removable(model)
    _remove_all(model)
    want = _logits(model)
    adapter_for(model).to_stock(model).save_pretrained(str(tmp_path / "exp"))
    plain = AutoModelForCausalLM.from_pretrained(str(tmp_path / "exp")).eval()  # no lnfree code involved
    assert type(plain) is type(model) and not fakeln_modules(plain)
    assert plain.config.use_parallel_residual == model.config.use_parallel_residual if "neox" in family else True
    assert (_logits(plain) - want).abs().max() < 1e-5 * want.abs().max()  # measured ~1e-9 absolute
    back = load_model(str(tmp_path / "exp"))
    assert back.ln_free and back.info["converted_from"]
    assert all(float(m.sigma) == 1.0 for m in fakeln_modules(back.model).values())
    assert (_logits(back.model) - want).abs().max() < 1e-5 * want.abs().max()
    bf = load_model(str(tmp_path / "exp"), dtype=torch.bfloat16)  # weights of ordinary size: bf16 runs
    assert torch.isfinite(_logits(bf.model)).all()


@pytest.mark.parametrize("family", VARIANTS)
def test_export_refuses_partly_removed_and_out_of_range(family):
    model = tiny_family_model(family)
    make_removable(model)
    remove_block(model, "mlp.0", 1.0)
    with pytest.raises(ValueError, match="partly LN-free"):
        adapter_for(model).to_stock(model)
    for m in fakeln_modules(model).values():
        m.remove(1.0)
    fakeln_modules(model)["f"].sigma.fill_(1e6)  # sigma_bar^2 = 1e12: beyond the huge eps' exact range
    with pytest.raises(ValueError, match="cannot export exactly"):
        adapter_for(model).to_stock(model)


def test_exact_range_of_the_huge_epsilon():
    """float32 has 24 significant bits: ulp(2^54) = 2^31, so m + 2^54 rounds to 2^54 for m < 2^30."""
    from lnfree_core.method.adapters.stock_export import exact_below

    assert exact_below(2.0**54) == 2.0**30
    e = torch.tensor(2.0**54)
    assert float(e + torch.tensor(2.0**30 - 64)) == 2.0**54 and float(e + torch.tensor(2.0**30 + 2**24)) > 2.0**54


def test_qwen3_q_norm_and_k_norm_are_frozen_with_ln_qk():
    model = tiny_family_model("qwen3")
    make_removable(model)
    model.train()
    from lnfree_core.method.tracking import SigmaTracker

    tr = SigmaTracker(model)
    model(TOKENS)
    tr.commit_micro_batch()
    tr.end_step()
    remove_block(model, "qk.1")
    mods = fakeln_modules(model)
    assert mods["qn.1"].is_removed and mods["kn.1"].is_removed and mods["qk.1"].is_removed
    assert not mods["qn.0"].is_removed and not mods["v.1"].is_removed
    # each is frozen at its own tracked average (RMS over tokens and heads), not at LN_qk's
    assert float(mods["qn.1"].sigma) == pytest.approx(float(mods["qn.1"].sigma_avg))
    assert float(mods["qn.1"].sigma) != pytest.approx(float(mods["qk.1"].sigma))


def test_non_gpt2_family_refuses_gpt2_tokenized_data(tmp_path):
    from lnfree_core.config import ConfigError, TrainConfig
    from lnfree_core.train import train

    path = tmp_path / "llama"
    tiny_family_model("llama").save_pretrained(str(path))
    text = tmp_path / "corpus.txt"
    text.write_text("some text to tokenize\n" * 50)
    for data in ("owt", str(text)):  # a registry set (GPT-2 ids) and text (GPT-2's tokenizer)
        with pytest.raises(ConfigError, match="tokenized with GPT-2"):
            train(TrainConfig(model=str(path), dataset=data, schedule="auto", out=str(tmp_path / "run"),
                              device="cpu", overrides={"max_steps": 20, "seq_len": 16}))


def test_analyses_decode_with_the_model_family_tokenizer(tmp_path, tiny_model_dir):
    """GPT-2 models decode with GPT-2's tokenizer; a Llama folder with its own tokenizer files with those;
    one without any shows ids."""
    from transformers import GPT2Tokenizer

    from lnfree_core.model_tokenizer import model_decoder, model_tokenizer

    assert model_decoder(str(tiny_model_dir))([15496]) == "Hello"  # GPT-2's id for "Hello"
    bare = tmp_path / "llama"
    tiny_family_model("llama").save_pretrained(str(bare))
    assert model_tokenizer(str(bare)) is None and model_decoder(str(bare))([5, 7]) == "<5><7>"
    with_tok = tmp_path / "llama_tok"
    tiny_family_model("llama").save_pretrained(str(with_tok))
    vocab = {"a": 0, "b": 1, "ab": 2, "<|endoftext|>": 3}
    GPT2Tokenizer(vocab=vocab, merges=[("a", "b")], model_max_length=64).save_pretrained(str(with_tok))
    assert model_decoder(str(with_tok))([2, 0]) == "aba"


def test_eval_cli_refuses_gpt2_ids_for_another_family(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    path = tmp_path / "qwen2"
    tiny_family_model("qwen2").save_pretrained(str(path))
    text = tmp_path / "corpus.txt"
    text.write_text("plain text, tokenized with GPT-2's tokenizer\n" * 40)
    repo = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "-m", "lnfree_core", "eval", "--model", str(path), "--dataset", str(text),
                           "--n", "2", "--seq-len", "16", "--device", "cpu", "--no-cache"], cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(repo), "OMP_NUM_THREADS": "1"},
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "tokenized with GPT-2" in proc.stderr and "Traceback" not in proc.stderr


def test_family_export_metadata_is_reported_and_interop_check_refuses(tmp_path, capsys):
    """An RMSNorm family's export metadata is not restored into the blocks (GPT-2 only), so the loaded
    blocks have sigma_bar = 1, but the recorded sigma_bar is reported as such (not as a mismatch), and
    `interop check` (GPT-2 folding) refuses the family with exit 2 instead of a traceback."""
    from lnfree_core.__main__ import main
    from lnfree_core.export_metadata import build_metadata, write_metadata
    from lnfree_core.models import load_model

    model = tiny_family_model("llama")
    make_removable(model)
    sig = _remove_all(model)
    meta = build_metadata(model)
    adapter_for(model).to_stock(model).save_pretrained(str(tmp_path / "exp"))
    write_metadata(tmp_path / "exp", meta)
    back = load_model(str(tmp_path / "exp"))
    assert back.ln_free and set(back.info["sigma_bar"].values()) == {1.0}
    assert back.info["recorded_sigma_bar"] == pytest.approx(sig, rel=1e-6)
    assert back.info["sigma_source"].startswith("recorded in lnfree_metadata.json")
    assert main(["interop", "sigma", str(tmp_path / "exp")]) == 0
    assert "recorded" in capsys.readouterr().out
    assert main(["interop", "check", str(tmp_path / "exp")]) == 2
    assert "GPT-2 only" in capsys.readouterr().err


def test_export_precision_measures_the_rms_of_rmsnorm_inputs():
    """RMSNorm adds eps to mean(x^2), not to the variance: the export's precision check must measure
    sqrt(mean_h x_h^2) (computed here by a hook of this test), which a large mean makes >> the std."""
    from lnfree_core.export_precision import measure_input_stds

    model = tiny_family_model("llama")
    make_removable(model)
    _remove_all(model)
    with torch.no_grad():
        model.model.embed_tokens.weight.add_(5.0)  # a common offset: RMS >> std at layer 0's input
    seen = {}
    norm = fakeln_modules(model)["mlp.0"]
    h = norm.register_forward_pre_hook(lambda m, a: seen.__setitem__("x", a[0].detach().double()))
    got = measure_input_stds(model, TOKENS)
    h.remove()
    x = seen["x"]
    rms, std = x.pow(2).mean(-1).sqrt().max().item(), x.std(-1, correction=0).max().item()
    assert rms > 1.5 * std
    assert got["mlp.0"] == pytest.approx(rms, rel=1e-5)


def test_model_card_front_matter_and_family_loader_claim(tmp_path):
    """The Hub's base_model field gets Hub ids only (a local path of this machine is left out of the
    front matter), and a non-GPT-2 card does not claim that lnfree restores the true sigma_bar
    (it records it; load_model restores it for GPT-2 only, see the metadata test above)."""
    from lnfree_core.model_card import render_model_card

    local = tmp_path / "my-base"
    local.mkdir()
    card = render_model_card(repo_name="x", base_model=str(local), mode="ln-free", schedule=None, model_type="llama")
    front = card.split("---")[1]
    assert "base_model" not in front and str(local) not in front
    assert "sigma_bar = 1 in every block" in card and "true sigma_bar is recorded" in card
    card = render_model_card(repo_name="x", base_model="gpt2", mode="ln-free", schedule=None, model_type="gpt2")
    assert "base_model:\n- gpt2" in card.split("---")[1]
