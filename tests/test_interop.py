"""Interop (issue 15): the folded form of an LN-free model in transformers, TransformerLens and nnsight,
the export metadata round trip, and the precision of the stock form's epsilon trick.

Everything runs on a tiny GPT-2 trained by the real trainer until every LayerNorm is removed
(fake_hub.tiny_finished_run), exported with lnfree's export. Tolerances: logits of two float32 forms of
the same function agree to 1e-4 (EXPORT_TOLERANCE; measured ~1e-6 on this model); sums recomputed in
float64 from the definition agree to 1e-5.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from fake_hub import tiny_finished_run

from lnfree_core.export import export_model
from lnfree_core.export_metadata import METADATA_FILE
from lnfree_core.interop import fold_model, load_folded
from lnfree_core.models import load_model
from lnfree_core.method.surgery import fakeln_modules

TOL = 1e-4


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return tiny_finished_run(tmp_path_factory)


@pytest.fixture(scope="module")
def export(run, tmp_path_factory):
    out = tmp_path_factory.mktemp("interop") / "export"
    res = export_model(str(run), out)
    assert res.ln_free
    return out


@pytest.fixture(scope="module")
def tokens():
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, 127, (3, 24), generator=g)


def _stock_logits(export_dir, tokens):
    """The export as plain transformers loads it (float32, eager attention, the stock LayerNorms)."""
    from transformers import GPT2LMHeadModel

    m = GPT2LMHeadModel.from_pretrained(str(export_dir), dtype=torch.float32, attn_implementation="eager").eval()
    assert m.config.layer_norm_epsilon >= 1e6  # really the eps-trick form
    with torch.no_grad():
        return m(tokens).logits


def _residuals(model, tokens):
    """Outputs of every transformer block (the residual stream after block l), via forward hooks."""
    outs = []
    hs = [b.register_forward_hook(lambda m, a, o: outs.append((o[0] if isinstance(o, tuple) else o).detach()))
          for b in model.transformer.h]
    try:
        with torch.no_grad():
            model(tokens)
    finally:
        for h in hs:
            h.remove()
    return outs


# ------------------------------------------------------------------------------------------ folding
def test_folded_model_has_no_layernorm_and_the_export_logits(run, export, tokens):
    fm = load_folded(str(run))
    assert not [m for m in fm.model.modules() if isinstance(m, torch.nn.LayerNorm) or "Norm" in type(m).__name__]
    with torch.no_grad():
        folded = fm.model(tokens).logits
    assert (folded - _stock_logits(export, tokens)).abs().max().item() < TOL
    # the same from the export folder and from the checkpoint spec
    for spec in (str(export), str(sorted((run / "checkpoints").iterdir())[-1])):
        with torch.no_grad():
            assert (load_folded(spec).model(tokens).logits - folded).abs().max().item() < TOL


def test_folded_residual_stream_is_the_real_one_centred(run, tokens):
    """Definition: the FakeLN model's residual x_l, centred over d_model, is the folded model's x'_l."""
    loaded = load_model(str(run))
    folded = fold_model(loaded.model)
    real, fres = _residuals(loaded.model, tokens), _residuals(folded, tokens)
    assert len(real) == len(fres) == loaded.model.config.n_layer
    for x, xf in zip(real, fres):
        centred = x.double() - x.double().mean(-1, keepdim=True)
        assert (xf.double() - centred).abs().max().item() < 1e-4 * max(1.0, centred.abs().max().item())
        assert xf.double().mean(-1).abs().max().item() < 1e-5 * max(1.0, xf.abs().max().item())


def test_fold_refuses_a_model_with_live_layernorms():
    from _tiny import tiny_model

    from lnfree_core.method.adapters import adapter_for

    m = tiny_model()
    with pytest.raises(ValueError, match="no FakeLN blocks"):
        fold_model(m)
    adapter_for(m).install(m)
    with pytest.raises(ValueError, match="still live"):
        fold_model(m)


def test_folded_model_runs_in_bfloat16(run, tokens):
    """Ordinary weight magnitudes: a half-precision folded model stays finite and close."""
    ref = load_folded(str(run)).model
    half = load_folded(str(run), dtype=torch.bfloat16).model
    with torch.no_grad():
        a, b = ref(tokens).logits, half(tokens).logits.float()
    assert torch.isfinite(b).all()
    assert (a - b).abs().max().item() < 0.1 * max(1.0, a.abs().max().item())


# ------------------------------------------------------------------------------------------ TransformerLens
def _bridge(spec):
    pytest.importorskip("transformer_lens", reason="TransformerLens is not installed (requirements-interop.txt)")
    from lnfree_core.interop import load_transformer_lens

    return load_transformer_lens(spec)


def test_transformer_lens_bridge_has_no_normalisation(export, tokens):
    bridge = _bridge(str(export))
    assert bridge.cfg.normalization_type is None
    assert not [k for k in bridge.hook_dict if "hook_scale" in k or "hook_normalized" in k]
    assert not [m for m in bridge.modules() if isinstance(m, torch.nn.LayerNorm) or "Normalization" in type(m).__name__]
    with torch.no_grad():
        logits, cache = bridge.run_with_cache(tokens)
    assert (logits - _stock_logits(export, tokens)).abs().max().item() < TOL
    for l in range(bridge.cfg.n_layers):  # the usual hook names; resid_mid = resid_pre + attn_out
        mid = cache[f"blocks.{l}.hook_resid_pre"] + cache[f"blocks.{l}.hook_attn_out"]
        assert (cache[f"blocks.{l}.hook_resid_mid"] - mid).abs().max().item() < 1e-5
        post = cache[f"blocks.{l}.hook_resid_mid"] + cache[f"blocks.{l}.hook_mlp_out"]
        assert (cache[f"blocks.{l}.hook_resid_post"] - post).abs().max().item() < 1e-5
    assert bridge.lnfree_info["sigma_source"].startswith("lnfree metadata")


def test_head_dla_from_the_bridge_cache_equals_lnfree_direct_effect(run, export, tokens):
    """Per head, DLA read off TransformerLens's own cache (stack_head_results, apply_ln_to_stack, W_U)
    equals lnfree's DE (eq. 4) on the FakeLN model: LN^f is affine, so DLA is exact."""
    from lnfree_core.analysis.dla import head_attribution

    bridge = _bridge(str(export))
    with torch.no_grad():
        _, cache = bridge.run_with_cache(tokens)
        heads = cache.stack_head_results(layer=-1)  # [L*H, batch, pos, d_model]
        heads = cache.apply_ln_to_stack(heads, layer=-1)  # identity: no normalisation
    w_u = bridge.W_U.detach().double()  # [d_model, vocab]
    u = w_u.T[tokens[:, 1:]]  # [batch, pos-1, d_model]
    dla = (heads[:, :, :-1].double() * u[None]).sum(-1).mean(-1)  # [L*H, batch]
    L, H = bridge.cfg.n_layers, bridge.cfg.n_heads
    dla = dla.view(L, H, -1).permute(2, 0, 1).numpy()  # [batch, L, H]
    ref = head_attribution(load_model(str(run)).model, tokens)
    assert np.abs(ref.de).max() > 1e-3  # not trivially zero
    np.testing.assert_allclose(dla, ref.de, atol=1e-5, rtol=0)


# ------------------------------------------------------------------------------------------ nnsight
def test_nnsight_reads_and_patches_the_residual_stream(run, export, tokens):
    pytest.importorskip("nnsight", reason="nnsight is not installed (requirements-interop.txt)")
    from lnfree_core.interop import load_nnsight

    lm = load_nnsight(str(export))
    with lm.trace(tokens):
        resid = lm.transformer.h[0].output.save()
        logits = lm.lm_head.output.save()
    assert (logits - _stock_logits(export, tokens)).abs().max().item() < TOL
    real = _residuals(load_model(str(run)).model, tokens)[0].double()
    assert (resid.double() - (real - real.mean(-1, keepdim=True))).abs().max().item() < 1e-4
    # patching: add a vector to the residual stream after block 0 at the last position
    steer = torch.linspace(-1, 1, lm.config.n_embd)
    with lm.trace(tokens):
        lm.transformer.h[0].output[:, -1] += steer
        patched = lm.lm_head.output.save()
    folded = load_folded(str(export)).model  # the same patch by a plain forward hook

    def add(module, args, out):
        out = out.clone()
        out[:, -1] += steer
        return out

    h = folded.transformer.h[0].register_forward_hook(add)
    with torch.no_grad():
        expect = folded(tokens).logits
    h.remove()
    assert (patched[:, -1] - logits[:, -1]).abs().max().item() > 1e-3
    assert (patched - expect).abs().max().item() < TOL


# ------------------------------------------------------------------------------------------ metadata
def test_export_metadata_round_trip_restores_true_sigma(run, export, tokens):
    meta = json.loads((export / METADATA_FILE).read_text())
    ckpt = sorted((run / "checkpoints").iterdir())[-1]
    fake = json.loads((ckpt / "fakeln.json").read_text())
    assert meta["format"] == "lnfree-metadata" and meta["lnfree_version"] not in (None, "")
    assert meta["base_model"] is None  # the run's base is a local folder: never published
    assert str(run.parent) not in (export / METADATA_FILE).read_text()
    import yaml

    assert meta["schedule"] == yaml.safe_load((run / "config.yaml").read_text())["schedule"]
    assert {n: b["sigma_bar"] for n, b in meta["blocks"].items()} == pytest.approx(
        {n: s["sigma"] for n, s in fake.items()}, rel=1e-7)
    loaded = load_model(str(export))
    assert loaded.info["sigma_source"].startswith("lnfree metadata")
    src = load_model(str(run))
    got, want = fakeln_modules(loaded.model), fakeln_modules(src.model)
    assert set(got) == set(want)
    for name, m in want.items():  # exact float32 round trip of sigma_bar, gamma, beta
        assert float(got[name].sigma) == float(m.sigma), name
        assert torch.equal(got[name].weight.float(), m.weight.float()), name
        assert torch.equal(got[name].bias.float(), m.bias.float()), name
    assert any(abs(float(want[f"qk.{l}"].sigma) - float(want[f"v.{l}"].sigma)) > 1e-6
               for l in range(src.model.config.n_layer))  # sigma_qk != sigma_v: the c_attn rescale was undone
    assert loaded.info["sigma_bar"] == pytest.approx({n: float(m.sigma) for n, m in want.items()})
    with torch.no_grad():
        out = loaded.model(tokens).logits
        assert (out - _stock_logits(export, tokens)).abs().max().item() < TOL
        assert (out - src.model(tokens).logits).abs().max().item() < TOL


def test_export_without_metadata_says_sigma_is_unknown(export, tmp_path, tokens):
    import shutil

    bare = tmp_path / "bare"
    shutil.copytree(export, bare)
    (bare / METADATA_FILE).unlink()
    loaded = load_model(str(bare))
    assert loaded.ln_free and set(loaded.info["sigma_bar"].values()) == {1.0}
    assert loaded.info["sigma_source"].startswith("not recorded")
    with torch.no_grad():  # only gamma / sigma_bar matters to the folded form: it is the same
        fm = load_folded(str(bare))
        assert (fm.model(tokens).logits - _stock_logits(export, tokens)).abs().max().item() < TOL
    from lnfree_core.interop import is_folded

    assert is_folded(fm.model) and not is_folded(loaded.model)
    # metadata that does not describe the weights is not applied, and that is said
    meta = json.loads((export / METADATA_FILE).read_text())
    meta["blocks"]["mlp.0"]["sigma_bar"] *= 2
    (bare / METADATA_FILE).write_text(json.dumps(meta))
    loaded = load_model(str(bare))
    assert "does not describe these weights" in loaded.info["sigma_source"]
    with torch.no_grad():
        assert (loaded.model(tokens).logits - _stock_logits(export, tokens)).abs().max().item() < TOL


# ------------------------------------------------------------------------------------------ precision
def test_eps_trick_error_grows_as_std_squared_over_two_eps():
    """Measured: a float64 LayerNorm with eps 1e12 and weight 1e6 against the affine map (x - mu) itself."""
    from lnfree_core.export_precision import eps_trick_relative_error

    g = torch.Generator().manual_seed(0)
    z = torch.randn(64, 256, generator=g, dtype=torch.float64)
    z = (z - z.mean(-1, keepdim=True)) / z.std(-1, correction=0, keepdim=True)  # std exactly 1 per token
    for std in (10.0, 300.0, 1e3, 1e4):
        x = z * std
        ln = torch.nn.functional.layer_norm(x, (256,), weight=torch.full((256,), 1e6, dtype=torch.float64), eps=1e12)
        rel = ((ln - x).abs().max() / x.abs().max()).item()
        assert rel == pytest.approx(std**2 / 2e12, rel=1e-3)
        assert eps_trick_relative_error(std) == pytest.approx(rel, rel=1e-3)
    assert eps_trick_relative_error(1e4) == pytest.approx(5e-5, rel=1e-3)
    assert eps_trick_relative_error(300.0) < 2**-24  # below float32's half-ulp: "exact" in float32


def test_export_measures_input_stds_and_warns_near_the_limit(tmp_path, tiny_dataset):
    from _tiny import tiny_model

    from lnfree_core.method.adapters import adapter_for
    from lnfree_core.export_precision import PRECISION_WARN_STD

    m = tiny_model()
    with torch.no_grad():
        m.transformer.wpe.weight.mul_(3e4)  # position embeddings (not tied to W_U) with a per-token std ~300
    fakes = adapter_for(m).install(m)
    for f in fakes.values():
        f.remove(300.0)  # sigma_bar of the order of the stds, as training would freeze it
    stock = adapter_for(m).to_stock(m)
    stock.save_pretrained(str(tmp_path / "loud"))
    res = export_model(str(tmp_path / "loud"), tmp_path / "out", precision_data=str(tiny_dataset))
    assert res.input_std["max"] > PRECISION_WARN_STD
    assert any("per-token std" in w and "folded" in w for w in res.warnings)
    meta = json.loads((tmp_path / "out" / METADATA_FILE).read_text())
    assert meta["input_std"]["max"] == pytest.approx(res.input_std["max"])
    assert meta["input_std"]["data"] == tiny_dataset.name  # a name, not this machine's path


def test_quiet_export_has_no_precision_warning(export):
    meta = json.loads((export / METADATA_FILE).read_text())
    assert meta["input_std"]["sequences"] > 0 and 0 < meta["input_std"]["max"] < 200


def test_model_card_shows_every_loader_and_float32(export):
    card = (export / "README.md").read_text()
    for needle in ("dtype=torch.float32", "load_transformer_lens(", "load_nnsight(", "hook_resid_pre",
                   "override_model", "float16", "lm.transformer.h[5].output"):
        assert needle in card, needle


def test_saelens_settings():
    from lnfree_core.interop import saelens_settings

    s = saelens_settings("alice/gpt2-ln-free", 6, 768)
    assert s["hook_name"] == "blocks.6.hook_resid_pre" and s["d_in"] == 768 and s["model_name"] == "alice/gpt2-ln-free"
    with pytest.raises(ValueError, match="site"):
        saelens_settings("x/y", 0, 8, site="ln1.hook_normalized")


def test_publish_shows_the_recorded_precision_warning(export, tmp_path):
    import shutil

    from lnfree_core.publish import export_warnings

    assert export_warnings(export) == []
    loud = tmp_path / "loud"
    shutil.copytree(export, loud)
    meta = json.loads((loud / METADATA_FILE).read_text())
    meta["input_std"].update({"max": 900.0, "max_block": "f"})
    (loud / METADATA_FILE).write_text(json.dumps(meta))
    (w,) = export_warnings(loud)
    assert "900" in w and "block f" in w


def test_cli_sigma_and_check(export, tmp_path, capsys):
    from lnfree_core.__main__ import main

    assert main(["interop", "sigma", str(export)]) == 0
    out = capsys.readouterr().out
    meta = json.loads((export / METADATA_FILE).read_text())
    assert "lnfree metadata" in out and f"{meta['blocks']['qk.0']['sigma_bar']:.6g}" in out
    assert main(["interop", "check", str(export)]) == 0
    out = capsys.readouterr().out
    diffs = [float(line.rsplit("=", 1)[1]) for line in out.splitlines() if "max |logit diff|" in line]
    assert len(diffs) >= 1 and max(diffs) < TOL
    assert main(["interop", "sigma", str(tmp_path / "nothing")]) == 2
