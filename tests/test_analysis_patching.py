"""IOI prompts and activation / attribution patching of resid_pre (section 5.2), checked against
independent computations written here from the definitions: a plain forward pass with the activation
replaced by a hook of this test, a central finite difference along (clean - corrupted), and a model
made exactly affine in the residual stream, where first order is exact."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from _tiny import save_gpt2_vocab_pair, tiny_model


# ------------------------------------------------------------------ the prompt set
def test_ioi_prompts_are_aligned_single_token_and_deterministic():
    from lnfree_core.analysis.ioi import build_ioi_prompts
    from lnfree_core.data import load_gpt2_tokenizer

    tok = load_gpt2_tokenizer(offline=True)
    p = build_ioi_prompts(480, seed=3)
    assert p.clean.shape == (480, 15) and p.corrupt.shape == (480, 15)
    pos = p.positions
    for i in range(0, 480, 37):  # re-tokenised independently: same ids, hence same length and positions
        ids = tok.encode(p.texts[i])
        assert ids == p.clean[i].tolist()
        words = p.texts[i].replace(",", " ,").split()
        assert tok.decode([ids[pos["S2"]]]).strip() == words[pos["S2"]]
    # the answer is the name mentioned once; S is repeated at S2
    for i in range(480):
        c = p.clean[i]
        assert c[pos["S2"]] == p.s[i] and {c[pos["name1"]], c[pos["name2"]]} == {p.io[i], p.s[i]}
        assert (p.corrupt[i] != c).sum() == 1 and p.corrupt[i, pos["S2"]] == p.io[i]
    # groups of four cover the four name orderings of a pair
    g = p.clean[:4]
    orders = {(int(r[pos["name1"]]), int(r[pos["name2"]]), int(r[pos["S2"]])) for r in g}
    assert len(orders) == 4
    assert np.array_equal(build_ioi_prompts(480, seed=3).clean, p.clean)
    assert not np.array_equal(build_ioi_prompts(480, seed=4).clean, p.clean)
    assert build_ioi_prompts(7, seed=3).clean.tolist() == p.clean[:7].tolist()


def test_ioi_prompts_reject_misaligned_templates_and_missing_vocabulary():
    from lnfree_core.analysis.ioi import build_ioi_prompts
    from lnfree_core.data import load_gpt2_tokenizer

    with pytest.raises(ValueError, match="one token layout"):
        build_ioi_prompts(8, templates=("While [B] and [A] were at the [PLACE], [B] gave a [OBJECT] to",
                                        "Then, [B] and [A] went to the [PLACE]. [B] gave a [OBJECT] to"))
    tok = load_gpt2_tokenizer(offline=True)
    small = np.array(sorted({i for w in ("While", " and", " were", " working", " commuting", " at", " to", " the",
                                         ",", " gave", " a") for i in tok.encode(w)}))
    with pytest.raises(ValueError, match="single-token names"):
        build_ioi_prompts(8, vocab_map=small)
    names = [tok.encode(" " + w)[0] for w in ("Mary", "John", "store", "drink")]
    vmap = np.concatenate([small, names])
    p = build_ioi_prompts(8, vocab_map=vmap)  # compact ids: map back to GPT-2 ids to read them
    assert p.clean.max() < len(vmap)
    assert tok.decode(vmap[p.clean[0]].tolist()) == p.texts[0]
    assert "store" in p.texts[0] and "drink" in p.texts[0]


# ------------------------------------------------------------------ patching maths
def _prompts(n=6, T=9, vocab=128, seed=0, diff_pos=4):
    g = np.random.default_rng(seed)
    clean = g.integers(0, vocab, size=(n, T))
    corrupt = clean.copy()
    corrupt[:, diff_pos] = (clean[:, diff_pos] + 1 + g.integers(0, vocab - 1, size=n)) % vocab
    io, s = g.integers(0, vocab, size=n), g.integers(0, vocab, size=n)
    return clean, corrupt, io, s


def _ld(model, x, io, s, layer=None, pos=None, value=None):
    """LD per prompt from model(x).logits, with resid_pre[layer][:, pos] := value (this test's own hook)."""
    handle = None
    if layer is not None:
        def pre(module, args, kwargs):
            h = (args[0] if args else kwargs["hidden_states"]).clone()
            h[:, pos] = value
            return ((h, *args[1:]), kwargs) if args else (args, {**kwargs, "hidden_states": h})
        handle = model.transformer.h[layer].register_forward_pre_hook(pre, with_kwargs=True)
    try:
        with torch.no_grad():
            logits = model(torch.as_tensor(x)).logits[:, -1]
    finally:
        if handle is not None:
            handle.remove()
    idx = torch.arange(len(io))
    return (logits[idx, torch.as_tensor(io)] - logits[idx, torch.as_tensor(s)]).double()


def _resid(model, x):
    with torch.no_grad():
        hs = model(torch.as_tensor(x), output_hidden_states=True).hidden_states  # [L + 1] of [n, T, d]
    return hs[:-1]  # resid_pre.0 .. resid_pre.{L-1} (the last entry is after ln_f)


def test_activation_patching_equals_forward_with_the_activation_replaced():
    from lnfree_core.analysis.patching import patch_residual

    model = tiny_model(seed=1, n_layer=3).double()
    clean, corrupt, io, s = _prompts()
    res = patch_residual(model, clean, corrupt, io, s, batch_size=4, rows_per_forward=7)
    base = _ld(model, corrupt, io, s)
    a_clean = _resid(model, clean)
    assert np.allclose(res.ld_corrupt, base.numpy(), atol=1e-10)
    assert np.allclose(res.ld_clean, _ld(model, clean, io, s).numpy(), atol=1e-10)
    for layer in range(3):
        for pos in range(clean.shape[1]):
            want = _ld(model, corrupt, io, s, layer, pos, a_clean[layer][:, pos]) - base
            assert np.allclose(res.act[:, layer, pos], want.numpy(), atol=1e-9), (layer, pos)
    assert np.all(res.act[:, :, :4] == 0)  # positions before the first differing token: nothing to patch
    assert np.abs(res.act[:, 0, 4]).max() > 1e-3
    # normalised: mean over prompts / (mean LD clean - mean LD corrupt); patching all of layer 0 = clean
    d = res.ld_clean.mean() - res.ld_corrupt.mean()
    assert np.allclose(res.normalised("act"), res.act.mean(0) / d)


def test_attribution_patching_equals_the_directional_derivative():
    from lnfree_core.analysis.patching import patch_residual

    model = tiny_model(seed=2, n_layer=2).double()
    clean, corrupt, io, s = _prompts(seed=5)
    res = patch_residual(model, clean, corrupt, io, s, batch_size=6)
    a_clean, a_corr = _resid(model, clean), _resid(model, corrupt)
    eps = 1e-5
    for layer in range(2):
        for pos in (4, 6, 8):
            a = a_corr[layer][:, pos]
            d = a_clean[layer][:, pos] - a
            up = _ld(model, corrupt, io, s, layer, pos, a + eps * d)
            down = _ld(model, corrupt, io, s, layer, pos, a - eps * d)
            fd = ((up - down) / (2 * eps)).numpy()  # d/de LD(a + e (clean - corr)) at e = 0
            assert np.allclose(res.attr[:, layer, pos], fd, rtol=1e-5, atol=1e-7), (layer, pos)
    assert np.all(res.attr[:, :, :4] == 0)


def _affine_model(with_ln: bool = False):
    """A tiny GPT-2 that is exactly affine in every residual-stream activation: LayerNorms replaced by
    identities, no query/key weights (uniform causal attention, linear in the values), identity MLP
    activation. with_ln=True keeps the LayerNorms (then it is not affine)."""
    from transformers import GPT2LMHeadModel

    from _tiny import tiny_config

    torch.manual_seed(3)
    cfg = tiny_config(n_layer=2)
    cfg.activation_function = "linear"
    model = GPT2LMHeadModel(cfg).eval()
    with torch.no_grad():
        for blk in model.transformer.h:
            d = cfg.n_embd
            blk.attn.c_attn.weight[:, : 2 * d] = 0  # q, k
            blk.attn.c_attn.bias[: 2 * d] = 0
            if not with_ln:
                blk.ln_1, blk.ln_2 = torch.nn.Identity(), torch.nn.Identity()
    if not with_ln:
        model.transformer.ln_f = torch.nn.Identity()
    return model.double()


def test_attribution_equals_activation_patching_on_an_affine_model():
    from lnfree_core.analysis.patching import patch_residual

    clean, corrupt, io, s = _prompts(seed=9)
    res = patch_residual(_affine_model(), clean, corrupt, io, s, batch_size=3, rows_per_forward=5)
    big = np.abs(res.act).max()
    assert big > 1e-7  # float64: agreement to 1e-9 relative is far above rounding
    np.testing.assert_allclose(res.attr, res.act, rtol=1e-9, atol=1e-12 * big)
    assert np.abs(res.error).max() < 1e-9 * np.abs(res.normalised("act")).max()
    # the same model with its LayerNorms is not affine: first order is no longer exact
    res_ln = patch_residual(_affine_model(with_ln=True), clean, corrupt, io, s, batch_size=6)
    assert np.abs(res_ln.error).max() > 1e-3 * np.abs(res_ln.normalised("act")).max()


def test_improvement_score_is_vanilla_minus_ln_free_layer_errors():
    from lnfree_core.analysis.patching import PatchingResult, improvement_score

    g = np.random.default_rng(0)

    def fake(scale):
        return PatchingResult(ld_clean=np.full(5, 2.0), ld_corrupt=np.full(5, -1.0),
                              act=g.normal(size=(5, 3, 4)), attr=g.normal(size=(5, 3, 4)) * scale, seconds={})

    v, f = fake(1.0), fake(0.5)
    ev = v.attr.mean(0) / 3 - v.act.mean(0) / 3
    ef = f.attr.mean(0) / 3 - f.act.mean(0) / 3
    per_layer = np.abs(ev).sum(1) - np.abs(ef).sum(1)
    out = improvement_score(v, f)
    assert out["per_layer"] == pytest.approx(per_layer.tolist(), rel=1e-12)
    assert out["mean"] == pytest.approx(per_layer.mean()) and out["std"] == pytest.approx(per_layer.std(ddof=0))


# ------------------------------------------------------------------ cached entry point and CLI
@pytest.fixture(scope="module")
def gpt2_vocab_models(tmp_path_factory):
    """A tiny GPT-2 over the full GPT-2 vocabulary (with LN) and its LN-free checkpoint."""
    base = tmp_path_factory.mktemp("ioi-models")
    save_gpt2_vocab_pair(base / "vanilla", base / "runs" / "free", seed=5)
    return str(base / "vanilla"), str(base / "runs" / "free")


def test_ioi_eval_caches_and_the_cli_reports_the_improvement_score(tmp_path, gpt2_vocab_models, capsys):
    import json

    from lnfree_core.__main__ import main
    from lnfree_core.analysis.cached_experiments import ioi_eval
    from lnfree_core.analysis.patching import improvement_score

    vanilla, free = gpt2_vocab_models
    a = ioi_eval(vanilla, n=8, cache_dir=tmp_path / "c")
    assert ioi_eval(vanilla, n=8, cache_dir=tmp_path / "c").entry.path == a.entry.path
    assert ioi_eval(vanilla, n=8, seed=1, cache_dir=tmp_path / "c").entry.path != a.entry.path
    assert a.patching.act.shape == (8, 2, 15) and a.labels[10] == "10:S2"
    b = ioi_eval(free, n=8, cache_dir=tmp_path / "c")
    assert b.ln_free and not a.ln_free
    out_csv = tmp_path / "ioi.csv"
    rc = main(["analyze", "ioi", "--model", vanilla, "--model", free, "--n", "8", "--cache-dir", str(tmp_path / "c"),
               "--json", "--csv", str(out_csv)])
    assert rc == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
    assert len(lines) == 3 and lines[0]["activation"] == a.patching.normalised("act").tolist()
    imp = improvement_score(a.patching, b.patching)
    assert lines[2]["improvement"]["mean"] == imp["mean"] and lines[2]["improvement"]["std"] == imp["std"]
    assert len(out_csv.read_text().splitlines()) == 1 + 2 * 2 * 15
    assert main(["analyze", "ioi", "--model", vanilla, "--n", "0"]) == 2
    assert main(["analyze", "ioi", "--model", vanilla, "--vanilla", vanilla]) == 2


def test_ioi_is_unavailable_for_a_small_vocabulary_without_a_map(tmp_path, tiny_model_dir, capsys):
    from lnfree_core.__main__ import main

    assert main(["analyze", "ioi", "--model", str(tiny_model_dir), "--n", "4", "--no-cache"]) == 2
    assert "IOI is unavailable" in capsys.readouterr().err


def test_ioi_refuses_a_model_of_another_family(tmp_path, capsys):
    """The prompts are GPT-2 ids: a Llama (whose ids mean other words) is refused with exit 2, even
    when its vocabulary is large enough to hold them."""
    import transformers as tf

    from lnfree_core.__main__ import main

    cfg = tf.LlamaConfig(vocab_size=50304, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32, max_position_embeddings=64)
    tf.LlamaForCausalLM(cfg).save_pretrained(str(tmp_path / "llama"))
    assert main(["analyze", "ioi", "--model", str(tmp_path / "llama"), "--n", "4", "--no-cache"]) == 2
    assert "GPT-2 models only" in capsys.readouterr().err
