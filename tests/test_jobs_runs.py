"""Run names, command lines and the never-overwrite rule of jobs/."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parent.parent)]
import test_jobs_support as S  # noqa: E402

from jobs import (  # noqa: E402
    InvalidRunName, JobError, RunExistsError, build_command, run_dir_for, start_run, validate_name,
)

fake, root = S.fake, S.root

GOOD = ["a", "run-1_2.3", "X" * 100, "_x", "2024.01.01", "a..b", "-dash"]
BAD = ["", ".hidden", ".", "..", "../x", "a/b", "/abs", "a\\b", "X" * 101, "has space", "ümlaut", "a\n", "a:b", "a*"]


@pytest.mark.parametrize("name", GOOD)
def test_valid_names_pass(name):
    assert validate_name(name) == name


@pytest.mark.parametrize("name", BAD)
def test_invalid_names_are_refused_with_a_reason(name):
    with pytest.raises(InvalidRunName) as e:
        validate_name(name)
    assert str(e.value)  # a message the user can read
    assert isinstance(e.value, ValueError)


@pytest.mark.parametrize("name, words", [(".hidden", "dot"), ("X" * 101, "101"), ("a/b", "'/'"), ("", "empty")])
def test_name_errors_say_what_is_wrong(name, words):
    with pytest.raises(InvalidRunName, match=words):
        validate_name(name)


def test_non_string_name_is_refused():
    with pytest.raises(InvalidRunName):
        validate_name(None)


@pytest.mark.parametrize("name", ["../escape", "a/b", ".x", "X" * 101])
def test_start_with_bad_name_creates_nothing(tmp_path, root, fake, name):
    with pytest.raises(InvalidRunName):
        start_run(root, name, {"max_steps": 1}, trainer=fake)
    assert not (tmp_path / "escape").exists()
    assert not root.exists() or list(root.iterdir()) == []


def test_run_dir_for_is_absolute_and_inside_root(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rd = run_dir_for("runs", "abc")
    assert rd == tmp_path / "runs" / "abc" and rd.is_absolute()


def test_build_command_single_process():
    cmd = build_command("/r/x", python="/py", trainer=("-m", "lnfree_core"))
    assert cmd == ["/py", "-m", "lnfree_core", "train", "--config", "/r/x/request.yaml", "--out", "/r/x"]


def test_build_command_resume_and_extra_args():
    cmd = build_command("/r/x", python="/py", trainer=("t.py",), resume=True, extra_args=["--lr", 3])
    assert cmd == ["/py", "t.py", "train", "--config", "/r/x/request.yaml", "--out", "/r/x", "--resume", "--lr", "3"]


def test_build_command_multi_process_uses_torchrun():
    cmd = build_command("/r/x", python="/py", nproc=4)
    assert cmd == ["/py", "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "4", "-m", "lnfree_core",
                   "train", "--config", "/r/x/request.yaml", "--out", "/r/x"]


@pytest.mark.parametrize("nproc", [0, -1, 1.5, True])
def test_build_command_rejects_bad_nproc(nproc):
    with pytest.raises(ValueError):
        build_command("/r/x", nproc=nproc)


def test_existing_run_is_never_overwritten(root, fake):
    h = start_run(root, "same", {"max_steps": 2}, trainer=fake)
    h.wait(15)
    before = {p.name: p.read_bytes() for p in h.run_dir.iterdir() if p.is_file()}
    with pytest.raises(RunExistsError) as e:
        start_run(root, "same", {"max_steps": 99}, trainer=fake)
    assert "never overwritten" in str(e.value) and "same" in str(e.value)
    after = {p.name: p.read_bytes() for p in h.run_dir.iterdir() if p.is_file()}
    assert after == before
    assert json.loads(after["job.json"])["pid"] == h.pid


def test_existing_plain_directory_is_not_taken_over(root, fake):
    (root / "mine").mkdir(parents=True)
    (root / "mine" / "keep.txt").write_text("precious")
    with pytest.raises(RunExistsError):
        start_run(root, "mine", {}, trainer=fake)
    assert sorted(p.name for p in (root / "mine").iterdir()) == ["keep.txt"]


def test_launch_failure_leaves_no_directory_behind(root, fake):
    with pytest.raises(JobError, match="could not launch"):
        start_run(root, "nopython", {}, python=str(root / "no-such-python"), trainer=fake)
    assert not (root / "nopython").exists()


def test_config_must_be_a_mapping(root, fake):
    with pytest.raises(TypeError):
        start_run(root, "x", [1, 2], trainer=fake)
    assert not (root / "x").exists()


def test_build_command_without_config():
    cmd = build_command("/r/x", python="/py", with_config=False, extra_args=["--model", "gpt2"])
    assert cmd == ["/py", "-m", "lnfree_core", "train", "--out", "/r/x", "--model", "gpt2"]


def test_request_yaml_holds_the_config_with_out_set_to_the_run(root, fake):
    import yaml

    h = start_run(root, "req", {"max_steps": 2, "out": "/elsewhere", "schedule": ("a", Path("b"))}, trainer=fake)
    h.wait(15)
    req = yaml.safe_load((h.run_dir / "request.yaml").read_text())
    assert req == {"max_steps": 2, "out": str(h.run_dir), "schedule": ["a", "b"]}
    assert h.command[h.command.index("--config") + 1] == str(h.run_dir / "request.yaml")
