"""`python -m lnfree_core push`: token from HF_TOKEN or stdin (never a flag value), never printed;
exit 0 pushed, 1 failed push, 2 bad input."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from fake_hub import TOKEN, FakeHub, hub_env, make_export_dir, snapshot  # noqa: F401

from lnfree_core.__main__ import main

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def export_dir(tmp_path):
    return make_export_dir(tmp_path / "export")


def _push(*args: str) -> int:
    return main(["push", *map(str, args)])


def test_push_with_hf_token_env(hub_env, export_dir, monkeypatch, capfd):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    with FakeHub(token=TOKEN) as hub:
        rc = _push(export_dir, "--repo-id", "alice/cli", "--private", "--endpoint", hub.endpoint,
                   "--commit-message", "from the CLI")
    out, err = capfd.readouterr()
    assert rc == 0, err
    repo = hub.repos["alice/cli"]
    assert repo.private and repo.commits[-1]["summary"] == "from the CLI"
    assert repo.files["model.safetensors"] == (export_dir / "model.safetensors").read_bytes()
    assert f"{hub.endpoint}/alice/cli" in out and repo.sha in out
    assert "uploading" in err  # progress goes to stderr
    assert TOKEN not in out + err


def test_token_from_stdin(hub_env, export_dir, monkeypatch, capfd):
    monkeypatch.setattr(sys, "stdin", io.StringIO(TOKEN + "\n"))
    with FakeHub(token=TOKEN) as hub:
        assert _push(export_dir, "--repo-id", "alice/stdin", "--endpoint", hub.endpoint, "--token-stdin") == 0
    assert all(r.authorized for r in hub.requests) and hub.repos["alice/stdin"].private is False
    out, err = capfd.readouterr()
    assert TOKEN not in out + err
    monkeypatch.setattr(sys, "stdin", io.StringIO("\n"))
    assert _push(export_dir, "--repo-id", "alice/stdin", "--token-stdin") == 2
    assert "standard input held no token" in capfd.readouterr().err


def test_token_flag_value_is_refused_without_echo(hub_env, export_dir, capfd):
    for args in (["--token", TOKEN], [f"--token={TOKEN}"]):
        assert _push(export_dir, "--repo-id", "alice/x", *args) == 2
        out, err = capfd.readouterr()
        assert "--token is not accepted" in err and TOKEN not in out + err


def test_failed_push_exits_1_with_the_reason(hub_env, export_dir, monkeypatch, capfd):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    before = snapshot(export_dir)
    with FakeHub(token=TOKEN, fail={"commit": 403}, echo_auth_in_errors=True) as hub:
        rc = _push(export_dir, "--repo-id", "alice/x", "--endpoint", hub.endpoint)
    out, err = capfd.readouterr()
    assert rc == 1 and "403" in err and "write access" in err and TOKEN not in out + err
    assert snapshot(export_dir) == before


@pytest.mark.parametrize("case", ["repo_id", "missing", "no_token", "endpoint"])
def test_bad_input_exits_2(hub_env, export_dir, tmp_path, monkeypatch, capfd, case):
    if case != "no_token":
        monkeypatch.setenv("HF_TOKEN", TOKEN)
    folder, repo, extra = export_dir, "alice/x", []
    if case == "repo_id":
        repo = "not a repo"
    elif case == "missing":
        folder = tmp_path / "empty"
        folder.mkdir()
    elif case == "endpoint":
        extra = ["--endpoint", "ftp://example"]
    assert _push(folder, "--repo-id", repo, *extra) == 2
    err = capfd.readouterr().err
    expected = {"repo_id": "USER/NAME", "missing": "python -m lnfree_core export RUN_DIR OUT_DIR",
                "no_token": "HF_TOKEN", "endpoint": "http(s) base URL"}[case]
    assert err.startswith("error: ") and expected in err


def test_module_entry_point_has_push(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")}
    env["PYTHONPATH"] = str(REPO)
    r = subprocess.run([sys.executable, "-m", "lnfree_core", "push", str(tmp_path), "--repo-id", "alice/x"],
                       capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert r.returncode == 2 and "not a model export" in r.stderr
    h = subprocess.run([sys.executable, "-m", "lnfree_core", "push", "--help"], capture_output=True, text=True,
                       env=env, cwd=tmp_path, timeout=120)
    assert h.returncode == 0 and "--token-stdin" in h.stdout and "--repo-id" in h.stdout
