"""Training as the reference runs did it: sigma EMA in tokens, AdamW betas, EOT label masking, weight decay
on FakeLN gamma, keep_steps, and the auxiliary loss (eq. 3). Each against an independent computation."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from _tiny import tiny_model


# ---------------------------------------------------------------------------------------- sigma EMA
def _reference_per_call(mb: int, ga: int, momentum: float, calls: int, n_steps: int, values) -> float:
    """The reference's FakeLayerNorm.recompute_average_std: an EMA update at every LN call, `calls` calls
    per micro-batch (ln_1: qk and v path), `ga` micro-batches per optimizer step. values[step] is the
    per-call mean sigma during that step (constant within a step)."""
    s = 1.0
    for step in range(n_steps):
        for _ in range(ga * calls):
            s = momentum * s + (1 - momentum) * values[step]
    return s


@pytest.mark.parametrize("name,mb,ga", [("gpt2-large", 28, 18), ("gpt2-xl", 18, 28)])
def test_presets_reproduce_reference_per_call_ema(name, mb, ga):
    """The preset's per-step factor equals the reference's per-call momentum 0.9 ** (mb / 32) compounded
    over a step's calls (ln_1 twice per micro-batch), and replaying a sigma history gives the same value
    (constant within a step; tolerance 1e-12 relative)."""
    from lnfree_core.method.presets import preset

    hp = preset(name).hparams
    assert (hp.micro_batch_size, hp.grad_accum_steps) == (mb, ga)
    m = 0.9 ** (mb / 32)
    for kind, calls in (("mlp", 1), ("qk", 2), ("v", 2), ("f", 1)):
        assert hp.ema_per_step(kind) == pytest.approx(m ** (ga * calls), rel=1e-12)
    # the numbers: about 0.19 (LN_MLP, LN_f) and 0.036 (ln_1) kept per optimizer step
    assert hp.ema_per_step("mlp") == pytest.approx(0.19, abs=0.005)
    assert hp.ema_per_step("qk") == pytest.approx(0.036, abs=0.002)
    values = np.linspace(1.0, 3.0, 7) ** 2
    for kind, calls in (("mlp", 1), ("qk", 2)):
        s = 1.0
        for v in values:
            k = hp.ema_per_step(kind)
            s = k * s + (1 - k) * v
        assert s == pytest.approx(_reference_per_call(mb, ga, m, calls, len(values), values), rel=1e-12)


def test_small_medium_presets_reproduce_reference_default_momentum():
    """Small/Medium: momentum 0.9 per call (the reference's default), gradient checkpointing re-running the
    blocks' LNs in the backward pass: per step 0.9 ** (ga * calls), calls = 2 (ln_2), 4 (ln_1), 1 (ln_f)."""
    from lnfree_core.method.presets import preset

    for name, ga in (("gpt2", 16), ("gpt2-medium", 23)):
        hp = preset(name).hparams
        for kind, calls in (("mlp", 2), ("qk", 4), ("v", 4), ("f", 1)):
            assert hp.ema_per_step(kind) == pytest.approx(0.9 ** (ga * calls), rel=1e-12)


def _run_tracker(model, x: torch.Tensor, mb: int, ema, ema_tokens, n_steps: int = 3) -> dict[str, float]:
    from lnfree_core.method.tracking import SigmaTracker

    tracker = SigmaTracker(model, ema, ema_tokens)
    model.train()
    for step in range(n_steps):
        xs = x[step]  # [rows, pos]
        for i in range(0, xs.shape[0], mb):
            model(input_ids=xs[i:i + mb])
            tracker.commit_micro_batch()
        tracker.end_step()
    return {k: float(m.sigma_avg) for k, m in tracker.modules.items()}


def _independent_sigma(model, x: torch.Tensor, ema: float, tokens_of) -> dict[str, float]:
    """sigma_{b,s} of every LN input from hooks on a plain model, eq. 2 per step, then the token EMA."""
    from lnfree_core.method.adapters import adapter_for

    ad = adapter_for(model)
    blocks = ad.blocks(model)
    inputs = {}
    for l, b in enumerate(blocks):
        inputs[f"qk.{l}"] = (b.ln_1, "in")
        inputs[f"mlp.{l}"] = (b.ln_2, "in")
    inputs["f"] = (model.transformer.ln_f, "in")
    out: dict[str, float] = {}
    for step in range(x.shape[0]):
        seen: dict[int, list] = {}
        hs = [m.register_forward_pre_hook(lambda mod, a, _s=seen: _s.setdefault(id(mod), []).append(a[0].detach()))
              for m, _ in set(inputs.values())]
        with torch.no_grad():
            model(input_ids=x[step])
        for h in hs:
            h.remove()
        for name, (mod, _) in list(inputs.items()) + [(f"v.{l}", (b.ln_1, "in")) for l, b in enumerate(blocks)]:
            a = torch.cat(seen[id(mod)]).double()  # [rows, pos, d]
            sig = torch.sqrt(a.var(-1, unbiased=False) + mod.eps)  # [rows, pos]
            mean, n = float(sig.mean()), sig.numel()
            kind = name.split(".")[0]
            k = ema ** (n / tokens_of[kind])
            out[name] = mean if name not in out else k * out[name] + (1 - k) * mean
    return out


def test_token_ema_is_independent_of_micro_batch_and_accumulation():
    """Same data, split as 8x1, 4x2 or 1x8 micro-batches per step: the same sigma_avg (token memory), equal
    to an independent computation from hooked LN inputs (tolerance 1e-5 relative, float32 sums)."""
    from lnfree_core.method.surgery import make_removable

    torch.manual_seed(1)
    x = torch.randint(0, 127, (3, 8, 16))  # [steps, rows, pos]
    tokens = {"mlp": 50, "qk": 25, "v": 25, "f": 80}
    base = tiny_model(seed=3)
    ref = _independent_sigma(base, x, 0.9, tokens)
    results = []
    for mb in (8, 4, 1):
        m = tiny_model(seed=3)
        make_removable(m)
        results.append(_run_tracker(m, x, mb, 0.9, tokens))
    for r in results:
        assert set(r) == set(ref)
        for k in ref:
            assert r[k] == pytest.approx(ref[k], rel=1e-5), k
    # the per-step form (the old option) differs from the token form here, and follows ema once per step
    m = tiny_model(seed=3)
    make_removable(m)
    per_step = _run_tracker(m, x, 4, 0.9, None)
    assert per_step["f"] != pytest.approx(results[0]["f"], rel=1e-6)
    assert per_step["f"] == pytest.approx(_per_step_ema(tiny_model(seed=3), x, 0.9), rel=1e-5)


def _per_step_ema(model, x, ema) -> float:
    means = []
    for step in range(x.shape[0]):
        cap = []
        h = model.transformer.ln_f.register_forward_pre_hook(lambda mod, a: cap.append(a[0].detach()))
        with torch.no_grad():
            model(input_ids=x[step])
        h.remove()
        a = cap[0].double()
        means.append(float(torch.sqrt(a.var(-1, unbiased=False) + 1e-5).mean()))
    s = means[0]
    for v in means[1:]:
        s = ema * s + (1 - ema) * v
    return s


def test_schedule_show_states_per_step_factor_per_block_kind():
    out = subprocess.run([sys.executable, "-m", "lnfree_core", "schedule", "show", "gpt2-large"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    line = next(l for l in out.stdout.splitlines() if "effective factor per optimizer step" in l)
    assert "mlp 0.19" in line and "qk 0.0362" in line and "v 0.0362" in line and "f 0.19" in line


# ---------------------------------------------------------------------------------------- presets
def test_presets_carry_reference_training_settings():
    from lnfree_core.method.presets import preset
    from lnfree_core.method.schedule import HParams, Schedule

    for name, release in (("gpt2", 300), ("gpt2-medium", 500), ("gpt2-large", 600), ("gpt2-xl", 800)):
        hp = preset(name).hparams
        assert tuple(hp.adam_betas) == (0.9, 0.999)
        assert hp.mask_eot_labels is True and hp.weight_decay_fakeln_gain is True
        assert hp.keep_steps == [release] and hp.sigma_ema == 0.9
        back = Schedule.from_dict(preset(name).to_dict()).hparams
        assert back == hp
    assert HParams().weight_decay_fakeln_gain is False  # lnfree's default (README: Reproducing the paper)
    from lnfree_core.method.schedule import fit_schedule

    auto = fit_schedule(12, 300).hparams
    assert auto.mask_eot_labels is True and tuple(auto.adam_betas) == (0.9, 0.999)
    # a schedule written before these settings existed trains as it did: no masking, no gamma decay
    old = {**preset("gpt2").to_dict()}
    old["hparams"] = {k: v for k, v in old["hparams"].items()
                      if k not in ("mask_eot_labels", "weight_decay_fakeln_gain", "sigma_ema_tokens", "keep_steps")}
    back = Schedule.from_dict(old).hparams
    assert back.mask_eot_labels is False and back.weight_decay_fakeln_gain is False and back.sigma_ema_tokens is None


# ---------------------------------------------------------------------------------------- EOT labels
def test_training_labels_mask_eot_targets_like_the_reference_collator():
    """CE with masked labels equals the mean of -log p(target) over non-EOT targets, by hand (1e-5)."""
    from lnfree_core.train import training_labels

    m = tiny_model(seed=2)
    eot = m.config.eos_token_id
    x = torch.randint(0, 127, (2, 12))
    x[0, 4] = x[1, 0] = x[1, 7] = eot
    labels = training_labels(x, eot, True)
    with torch.no_grad():
        loss = float(m(input_ids=x, labels=labels).loss)
        logp = torch.log_softmax(m(input_ids=x).logits.double(), -1)  # [2, 12, vocab]
    vals = [-float(logp[b, t, x[b, t + 1]]) for b in range(2) for t in range(11) if int(x[b, t + 1]) != eot]
    assert len(vals) == 2 * 11 - 2  # the EOT at position 0 of row 1 is no target anyway
    assert loss == pytest.approx(float(np.mean(vals)), rel=1e-5)
    assert torch.equal(training_labels(x, eot, False), x)


# ---------------------------------------------------------------------------------------- weight decay
def test_weight_decay_on_fakeln_gain_is_a_setting():
    from lnfree_core.method.fakeln import FakeLayerNorm
    from lnfree_core.optim import param_groups
    from lnfree_core.method.surgery import make_removable

    m = tiny_model()
    make_removable(m)
    decay, no_decay = param_groups(m, 0.01, decay_fakeln_gain=True)
    ids_decay, ids_no = {id(p) for p in decay["params"]}, {id(p) for p in no_decay["params"]}
    fakes = [mod for mod in m.modules() if isinstance(mod, FakeLayerNorm)]
    assert fakes and all(id(f.weight) in ids_decay and id(f.bias) in ids_no for f in fakes)
    assert len(decay["params"]) + len(no_decay["params"]) == len({id(p) for p in m.parameters()})
    decay0, _ = param_groups(m, 0.01)
    assert not any(id(f.weight) in {id(p) for p in decay0["params"]} for f in fakes)


# ---------------------------------------------------------------------------------------- keep_steps
def test_keep_steps_survive_checkpoint_rotation(tmp_path):
    from lnfree_core.checkpoint import checkpoint_dirs, save_checkpoint, shared_aliases

    m = tiny_model()
    for step in range(1, 7):
        save_checkpoint(tmp_path, step, m, m.state_dict(), None, {}, {"step": step}, shared_aliases(m), keep=2,
                        protect=[2, 3])
    assert [d.name for d in checkpoint_dirs(tmp_path)] == [f"step_{s:08d}" for s in (2, 3, 5, 6)]


def test_cli_training_flags_reach_the_config():
    import argparse

    from lnfree_core.cli import train as cli_train

    parser = argparse.ArgumentParser()
    cli_train.register(parser.add_subparsers())
    args = parser.parse_args(["train", "--model", "m", "--out", "o", "--keep-steps", "100,200", "--sigma-ema-tokens",
                              "step", "--adam-betas", "0.9,0.95", "--no-mask-eot-labels", "--decay-fakeln-gain"])
    cfg = cli_train.config_from_args(args)
    assert cfg.overrides == {"keep_steps": [100, 200], "sigma_ema_tokens": None, "adam_betas": [0.9, 0.95],
                             "mask_eot_labels": False, "weight_decay_fakeln_gain": True}
    hp = cfg.resolve_schedule(12).hparams
    assert hp.sigma_ema_tokens is None and hp.adam_betas == (0.9, 0.95) and hp.keep_steps == [100, 200]
    bad = subprocess.run([sys.executable, "-m", "lnfree_core", "train", "--model", "m", "--out", "o",
                          "--adam-betas", "0.9"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "0.9,0.999" in bad.stderr



def test_keep_steps_the_run_never_reaches_are_refused_before_training():
    """--keep-steps 900 with --max-steps 400: the release checkpoint would silently never exist."""
    from lnfree_core.config import ConfigError, TrainConfig

    cfg = TrainConfig(model="m", out="o", dataset="d", schedule="gpt2",
                      overrides={"keep_steps": [300, 900], "max_steps": 400})
    with pytest.raises(ConfigError, match=r"keep_steps \[900\] are outside the run's steps 1..400"):
        cfg.resolve_schedule(12)
    ok = TrainConfig(model="m", out="o", dataset="d", schedule="gpt2", overrides={"max_steps": 200})
    assert ok.resolve_schedule(12).hparams.keep_steps == [300]  # the preset's own release step: kept as is


# ---------------------------------------------------------------------------------------- aux loss (eq. 3)
def test_aux_loss_eq3_by_hand():
    """L_aux = lambda * mean_{b,s} (sigma - sigma_hat)^2 with sigma_hat the mean over positions s != 0 that
    are not EOT, detached; value and gradient 2 lambda (sigma - sigma_hat) / (B S) to 1e-6 relative (the
    loss is computed in float32)."""
    from lnfree_core.method.aux_loss import aux_loss

    sig = torch.tensor([[5.0, 1.0, 2.0, 9.0], [7.0, 3.0, 4.0, 2.0]], dtype=torch.float64, requires_grad=True)
    ids = torch.tensor([[1, 2, 3, 50], [4, 50, 6, 7]])
    lam = 0.1
    # M = {(0,1), (0,2), (1,2), (1,3)}: values 1, 2, 4, 2 -> sigma_hat = 2.25
    hat = (1 + 2 + 4 + 2) / 4
    flat = [5, 1, 2, 9, 7, 3, 4, 2]
    expected = lam * sum((v - hat) ** 2 for v in flat) / 8
    loss = aux_loss(sig, ids, eot_id=50, weight=lam)
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-6)
    loss.backward()
    grad = [2 * lam * (v - hat) / 8 for v in flat]
    assert sig.grad.flatten().tolist() == pytest.approx(grad, rel=1e-6)
    # no positions in M: the target falls back to the mean over all positions
    all_eot = torch.full((1, 3), 50)
    s2 = torch.tensor([[1.0, 2.0, 6.0]], dtype=torch.float64)
    assert float(aux_loss(s2, all_eot, 50, 1.0)) == pytest.approx(np.var([1, 2, 6]), rel=1e-6)


def test_train_page_keep_steps_field_parses_into_the_run_config(tmp_path):
    from pages._common.ui_data.runs import launch_plan, parse_keep_steps

    assert parse_keep_steps(" 300, 600 ") == [300, 600] and parse_keep_steps("") is None
    with pytest.raises(ValueError, match="comma-separated"):
        parse_keep_steps("300;600")
    plan = launch_plan(tmp_path, "r", model="gpt2", dataset="owt", schedule="gpt2", mode="ln-free",
                       overrides={"keep_steps": parse_keep_steps("100,200")})
    assert plan[0][1]["overrides"] == {"keep_steps": [100, 200]}


def test_trainer_keeps_release_checkpoints_and_records_the_settings(tiny_model_dir, tiny_dataset, tmp_path):
    """A real run: keep_steps checkpoints survive rotation (keep_checkpoints=1), and the resolved config
    records the reference settings it trained with."""
    from lnfree_core.checkpoint import checkpoint_dirs
    from lnfree_core.config import TrainConfig
    from lnfree_core.train import train

    over = dict(max_steps=12, micro_batch_size=2, grad_accum_steps=2, seq_len=32, warmup_steps=1, lr=1e-3,
                min_lr=5e-4, keep_steps=[3, 7], sigma_ema=0.9, sigma_ema_tokens={"mlp": 64, "qk": 32, "v": 32, "f": 64},
                weight_decay_fakeln_gain=True)
    run = tmp_path / "run"
    res = train(TrainConfig(model=str(tiny_model_dir), dataset=str(tiny_dataset), schedule="auto", out=str(run),
                            overrides=over, save_every=5, keep_checkpoints=1))
    assert res.state == "finished"
    assert [d.name for d in checkpoint_dirs(run)] == [f"step_{s:08d}" for s in (3, 7, 12)]
    hp = TrainConfig.load(run / "config.yaml").schedule["hparams"]
    assert hp["keep_steps"] == [3, 7] and hp["mask_eot_labels"] is True and hp["sigma_ema_tokens"]["qk"] == 32
    assert hp["adam_betas"] == [0.9, 0.999] and hp["weight_decay_fakeln_gain"] is True
