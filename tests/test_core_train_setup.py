"""The set-up of a training run (train_setup.py), each part on its own: the config on resume, the run
directory checks, a run refused before it starts, restoring a checkpoint, the device and the data feed."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from _tiny import tiny_model
from lnfree_core.checkpoint import shared_aliases
from lnfree_core.config import ConfigError, TrainConfig
from lnfree_core.data.sources import iter_sequences
from lnfree_core.rundir import read_status
from lnfree_core.train import Checkpointer
from lnfree_core.train_setup import (Batches, RunExists, Restored, apply_resume_changes, check_run_dir, claim_run_dir,
                                     fail_setup, pick_device, resolve_config, restore_checkpoint)


def _saved(**kw) -> TrainConfig:
    return TrainConfig(model="m", dataset="d", out="o", schedule={"name": "auto", "hparams": {"lr": 1e-3}},
                       device="cpu", save_every=10, **kw)


def test_resume_applies_where_and_how_fast_and_refuses_what_would_change_the_run():
    saved = _saved()
    applied = apply_resume_changes(saved, {"save_every": 50, "device": "cpu", "out": "elsewhere"})
    assert applied == ["save_every: 10 -> 50"]  # device equal to the saved one, out ignored
    assert saved.save_every == 50
    with pytest.raises(ConfigError) as e:
        apply_resume_changes(_saved(), {"lr": 5e-3, "save_every": 20})
    assert "lr (saved 0.001, given 0.005)" in str(e.value) and "--save-every" in str(e.value)


def test_one_trainer_claims_a_run_directory(tmp_path):
    out = tmp_path / "run"
    lock, created = claim_run_dir(out)
    try:
        assert created and out.is_dir()
        with pytest.raises(ConfigError):  # a second trainer on the same run is refused
            claim_run_dir(out)
        assert out.is_dir()  # not made by the refused call: left alone
    finally:
        lock.release()
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="is a file"):
        claim_run_dir(tmp_path / "file")


def test_a_new_run_needs_an_empty_folder_and_a_resumed_one_its_config(tmp_path):
    check_run_dir(tmp_path, resume=False)  # empty: fine
    with pytest.raises(ConfigError, match="no config.yaml"):
        check_run_dir(tmp_path, resume=True)
    (tmp_path / "metrics.jsonl").write_text("")
    with pytest.raises(RunExists, match="--resume"):
        check_run_dir(tmp_path, resume=False)


def test_resume_of_a_run_that_never_got_past_start_up_starts_it_afresh(tmp_path):
    notes: list[str] = []
    cfg = TrainConfig(model="m", dataset="d", out=str(tmp_path))
    got, resume = resolve_config(cfg, True, {}, tmp_path, created=False, rank=0, started=0.0, notes=notes)
    assert got is cfg and resume is False and "starting it afresh" in notes[0]


def test_resume_runs_the_saved_config_with_the_changes_saved(tmp_path):
    _saved().save(tmp_path / "config.yaml")
    notes: list[str] = []
    got, resume = resolve_config(TrainConfig(model="m", out=str(tmp_path)), True, {"save_every": 30}, tmp_path,
                                 created=False, rank=0, started=0.0, notes=notes)
    assert resume is True and got.save_every == 30 and got.out == str(tmp_path)
    assert TrainConfig.load(tmp_path / "config.yaml").save_every == 30
    assert notes == ["changed on resume: save_every: 10 -> 30"]


def test_a_refused_run_leaves_nothing_it_made_and_says_why_in_a_folder_it_found(tmp_path):
    made = tmp_path / "made"
    made.mkdir()
    fail_setup(made, True, "bad model", started=1.0)
    assert not made.exists()
    found = tmp_path / "found"
    found.mkdir()
    fail_setup(found, False, "bad model", started=1.0)
    st = read_status(found)
    assert (st["state"], st["step"], st["reason"]) == ("failed", 0, "bad model")


def test_restore_loads_the_newest_checkpoint_and_says_where_the_run_stands(tmp_path):
    model = tiny_model().train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    (tmp_path / "checkpoints").mkdir()
    saver = Checkpointer(tmp_path, model, optimizer, _NoLog(), rank=0, fsdp=False, ln_free=False,
                         device=torch.device("cpu"), aliases=shared_aliases(model), keep=3)
    saver.save(3, epoch=0, pos=12, tokens=96, history=[0.5])
    with torch.no_grad():
        model.transformer.wte.weight.add_(1.0)  # a later step
    saver.save(6, epoch=1, pos=4, tokens=192, history=[0.5, 0.7])
    fresh = tiny_model()
    assert restore_checkpoint(fresh, tmp_path, resume=False, rank=0, notes=[]) == Restored()
    got = restore_checkpoint(fresh, tmp_path, resume=True, rank=0, notes=[])
    assert got.ckpt.name.endswith("6") and (got.step, got.epoch, got.pos, got.tokens) == (6, 1, 4, 192)
    assert got.history == [0.5, 0.7] and got.rng is not None
    assert torch.equal(fresh.transformer.wte.weight, model.transformer.wte.weight)


class _NoLog:
    def event(self, *a, **k):
        pass

    def status(self, *a, **k):
        pass


def test_pick_device_names_the_device_or_says_what_to_use():
    assert pick_device("cpu", 0, 1) == torch.device("cpu")
    with pytest.raises(ConfigError, match="unknown device"):
        pick_device("tpu-ish", 0, 1)


def test_each_rank_reads_its_slice_of_the_same_global_micro_batch(tmp_path):
    data = tmp_path / "tokens.jsonl"
    rows = [[(7 * r + i) % 127 for i in range(32)] for r in range(10)]
    data.write_text("".join(json.dumps({"input_ids": row}) + "\n" for row in rows))
    cfg = TrainConfig(model="m", dataset=str(data), out=str(tmp_path / "run"), shuffle=False)
    one = Batches(cfg, 32, 4, rank=0, world=1)
    r0, r1 = Batches(cfg, 32, 2, rank=0, world=2), Batches(cfg, 32, 2, rank=1, world=2)
    for _ in range(3):  # 10 sequences, 4 a step: the third step wraps into the second epoch
        whole = one.next()
        assert np.array_equal(np.concatenate([r0.next(), r1.next()]), whole)
    stream = list(iter_sequences(str(data), split="train", seq_len=32))  # the source's order (10 sequences)
    assert np.array_equal(whole, np.stack(stream[:4]))  # the 2 left over are dropped; epoch 2 starts again
    assert (one.epoch, one.pos) == (r0.epoch, r0.pos) == (1, 4)
