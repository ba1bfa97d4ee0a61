"""Schedules: presets reproduce the paper's Tables 3 and 4; validation; auto fit; files; CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from lnfree_core.optim import lr_at
from lnfree_core.method.presets import preset, preset_names, resolve_schedule
from lnfree_core.method.schedule import Schedule, ScheduleError, fit_schedule

# Table 4 of the paper: (first, second, last) removal step of each group, and LN^f.
TABLE4 = {
    "gpt2": {"mlp": (20, 22, 42), "qk": (44, 46, 66), "v": (68, 71, 101), "f": 104, "L": 12},
    "gpt2-medium": {"mlp": (20, 22, 66), "qk": (68, 70, 114), "v": (116, 119, 185), "f": 188, "L": 24},
    "gpt2-large": {"mlp": (30, 34, 170), "qk": (174, 178, 314), "v": (318, 324, 528), "f": 534, "L": 36},
    "gpt2-xl": {"mlp": (50, 54, 238), "qk": (242, 246, 430), "v": (434, 440, 716), "f": 722, "L": 48},
}
# Table 3: micro batch, accumulation, tokens/step, lr, min lr, aux weight, warmup, max steps, grad ckpt
TABLE3 = {
    "gpt2": (32, 16, 524288, 6e-4, 3e-4, 0.1, 25, 300, True),
    "gpt2-medium": (22, 23, 518144, 6e-4, 3e-4, 0.1, 10, 500, True),
    "gpt2-large": (28, 18, 516096, 3e-4, 4e-5, 0.03, 15, 1200, False),
    "gpt2-xl": (18, 28, 516096, 1e-4, 2e-5, 0.01, 20, 1200, False),
}


@pytest.mark.parametrize("name", list(TABLE4))
def test_presets_reproduce_table4(name):
    sc = preset(name)
    t = TABLE4[name]
    assert sc.n_layers == t["L"]
    for g in ("mlp", "qk", "v"):
        evs = sc.group_events(g)
        assert len(evs) == t["L"]
        assert (evs[0].step, evs[1].step, evs[-1].step) == t[g]
        assert [e.layer for e in evs] == list(range(t["L"]))
        gaps = {b.step - a.step for a, b in zip(evs, evs[1:])}
        assert len(gaps) == 1  # uniform within a group
    assert sc.group_events("f")[0].step == t["f"]
    assert len(sc.events()) == 3 * t["L"] + 1


@pytest.mark.parametrize("name", list(TABLE3))
def test_presets_reproduce_table3(name):
    hp = preset(name).hparams
    mb, ga, tok, lr, min_lr, aux, warm, steps, ckpt = TABLE3[name]
    assert (hp.micro_batch_size, hp.grad_accum_steps, hp.tokens_per_step) == (mb, ga, tok)
    assert (hp.lr, hp.min_lr, hp.aux_weight, hp.warmup_steps, hp.max_steps) == (lr, min_lr, aux, warm, steps)
    assert hp.grad_checkpointing is ckpt and hp.weight_decay == 0.01 and hp.seq_len == 1024


def test_events_sorted_and_json_shape():
    evs = preset("gpt2").events()
    assert [e.step for e in evs] == sorted(e.step for e in evs)
    assert evs[0].to_dict() == {"step": 20, "block": "mlp", "layer": 0}
    assert evs[-1].to_dict() == {"step": 104, "block": "f", "layer": None}


def test_validation_messages():
    sc = preset("gpt2")
    with pytest.raises(ScheduleError, match="12 layers but the model has 24"):
        sc.validate(24)
    bad = Schedule.from_dict({**sc.to_dict(), "starts": {"mlp": 20, "qk": 40, "v": 68, "f": 104}})
    with pytest.raises(ScheduleError, match="groups overlap: qk starts at step 40 but mlp has its last event at step 42"):
        bad.validate()
    late = Schedule.from_dict({**sc.to_dict(), "hparams": {**sc.to_dict()["hparams"], "max_steps": 100}})
    with pytest.raises(ScheduleError, match="last removal event is at step 104 but max_steps is 100"):
        late.validate()
    zero = Schedule.from_dict({**sc.to_dict(), "starts": {"mlp": 0, "qk": 44, "v": 68, "f": 104}})
    with pytest.raises(ScheduleError, match="step >= 1"):
        zero.validate()
    with pytest.raises(ScheduleError, match="known presets: gpt2, gpt2-medium, gpt2-large, gpt2-xl"):
        resolve_schedule("gpt3")
    with pytest.raises(ScheduleError, match="unknown hyperparameters"):
        Schedule.from_dict({**sc.to_dict(), "hparams": {"learning_rate": 1}})


def test_gap_zero_removes_a_group_at_once():
    d = preset("gpt2").to_dict()
    d["gaps"]["mlp"] = 0
    d["starts"]["qk"] = 21
    sc = Schedule.from_dict(d)
    sc.validate(12)
    assert {e.step for e in sc.group_events("mlp")} == {20}


@pytest.mark.parametrize("layers,steps", [(2, 40), (4, 100), (12, 300), (48, 1200), (6, 25)])
def test_auto_fit_is_valid_and_keeps_paper_ratios(layers, steps):
    sc = fit_schedule(layers, steps).validate(layers)
    assert sc.gaps["mlp"] == sc.gaps["qk"] and sc.gaps["v"] >= sc.gaps["mlp"] >= 1
    assert sc.last_event_step() < steps
    assert [e.block for e in sc.events()][:layers] == ["mlp"] * layers


def test_auto_fit_too_few_steps_says_how_many():
    with pytest.raises(ScheduleError, match="too few"):
        fit_schedule(12, 30)


@pytest.mark.parametrize("ext", ["yaml", "json"])
def test_schedule_file_round_trip(tmp_path, ext):
    sc = preset("gpt2-large")
    path = sc.save(tmp_path / f"s.{ext}")
    back = resolve_schedule(str(path))
    assert back.to_dict() == sc.to_dict()
    assert back.events() == sc.events()


def test_lr_schedule_warmup_then_cosine_to_min():
    lrs = [lr_at(s, 6e-4, 3e-4, 25, 300) for s in range(300)]
    assert lrs[0] == pytest.approx(6e-4 / 25) and lrs[24] == pytest.approx(6e-4)
    assert all(a >= b for a, b in zip(lrs[25:], lrs[26:]))
    assert lrs[-1] == pytest.approx(3e-4, rel=1e-3)
    assert lr_at(162, 6e-4, 3e-4, 25, 300) == pytest.approx(4.5e-4, rel=1e-2)  # halfway: the mean


def test_cli_schedule_show_json_and_errors():
    run = lambda *a: subprocess.run([sys.executable, "-m", "lnfree_core", "schedule", *a],  # noqa: E731
                                    capture_output=True, text=True)
    out = run("show", "gpt2", "--json")
    assert out.returncode == 0
    events = json.loads(out.stdout)
    assert events[0] == {"step": 20, "block": "mlp", "layer": 0} and events[-1] == {"step": 104, "block": "f", "layer": None}
    assert len(events) == 37
    bad = run("show", "nope")
    assert bad.returncode == 2 and "known presets" in bad.stderr and "Traceback" not in bad.stderr
    listing = run("list")
    assert all(n in listing.stdout for n in preset_names())
