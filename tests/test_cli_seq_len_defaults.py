"""Defaults follow the model: eval/analyze/train with no --seq-len use at most the model's context (a
128-position demo model used to die with "IndexError: index out of range in self" at the default 1024
or 512), an explicit --seq-len beyond it exits 2 with a message before any work, and `analyze` takes
every --model it is given (it used to keep only the last)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from _tiny import tiny_model
from lnfree_core.__main__ import main

CONTEXT = 16  # the tiny models' n_positions: far below every command's default (512, 1024)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("seqlen")
    tiny_model(seed=1, n_positions=CONTEXT).save_pretrained(str(root / "a"))
    tiny_model(seed=2, n_positions=CONTEXT).save_pretrained(str(root / "b"))
    rng = np.random.default_rng(0)
    with open(root / "data.jsonl", "w") as f:
        for row in rng.integers(0, 127, size=(24, 64)):
            f.write(json.dumps({"input_ids": row.tolist()}) + "\n")
    return root


def _common(root, cache="cache"):
    return ["--dataset", str(root / "data.jsonl"), "--n", "4", "--cache-dir", str(root / cache), "--json"]


def test_eval_default_seq_len_is_the_model_context(workspace, capsys):
    rc = main(["eval", "--model", str(workspace / "a"), *_common(workspace)])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0
    assert out["tokens"] == 4 * (CONTEXT - 1)  # 4 sequences of CONTEXT tokens, CONTEXT - 1 predictions each


@pytest.mark.parametrize("argv", [
    ["eval"], ["analyze", "outliers"], ["analyze", "dla"], ["analyze", "first-token"], ["analyze", "confidence"],
])
def test_seq_len_beyond_the_context_exits_2_before_any_work(workspace, capsys, argv):
    rc = main([*argv, "--model", str(workspace / "a"), *_common(workspace, "cache-refused"),
               "--seq-len", str(CONTEXT + 1)])
    err = capsys.readouterr().err
    assert rc == 2
    assert f"--seq-len {CONTEXT + 1}" in err and f"{CONTEXT} positions" in err
    assert not (workspace / "cache-refused").exists()


def test_analyze_takes_every_model(workspace, capsys):
    rc = main(["analyze", "dla", "--model", str(workspace / "a"), "--model", str(workspace / "b"),
               *_common(workspace), "--n-boot", "10"])
    lines = [json.loads(ln) for ln in capsys.readouterr().out.splitlines() if ln.strip()]
    assert rc == 0
    assert [ln["model"] for ln in lines] == [str(workspace / "a"), str(workspace / "b")]


def test_train_preset_seq_len_follows_the_model_and_an_override_beyond_it_is_refused(workspace):
    from lnfree_core.config import ConfigError, TrainConfig

    cfg = TrainConfig(model=str(workspace / "a"), out=str(workspace / "run"), dataset=str(workspace / "data.jsonl"),
                      schedule="auto", overrides={"max_steps": 8})
    assert cfg.resolve_schedule(2, context=CONTEXT).hparams.seq_len == CONTEXT
    assert cfg.resolve_schedule(2).hparams.seq_len == 1024  # no model context known: the preset's
    cfg.overrides["seq_len"] = CONTEXT * 2
    with pytest.raises(ConfigError, match=f"longer than the model's context \\({CONTEXT} positions\\)"):
        cfg.resolve_schedule(2, context=CONTEXT)


def test_train_cli_with_a_too_long_seq_len_exits_2_and_writes_no_checkpoint(workspace, capsys):
    out = workspace / "run-too-long"
    rc = main(["train", "--model", str(workspace / "a"), "--dataset", str(workspace / "data.jsonl"),
               "--schedule", "auto", "--max-steps", "12", "--seq-len", str(CONTEXT * 2), "--out", str(out),
               "--device", "cpu"])
    assert rc == 2
    assert "context" in capsys.readouterr().err
    assert not (out / "checkpoints").exists()
