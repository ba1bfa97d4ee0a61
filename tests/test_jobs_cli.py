"""The command line: python -m jobs list|start|cancel|resume|status|delete."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parent.parent)]
import test_jobs_support as S  # noqa: E402

from jobs import run_status  # noqa: E402
from jobs.cli import main  # noqa: E402
from jobs.proc import pid_alive  # noqa: E402

fake, root = S.fake, S.root
REPO = Path(__file__).resolve().parent.parent
COMMANDS = ["list", "start", "cancel", "resume", "status", "delete"]


def cli(capsys, *args: str) -> tuple[int, str, str]:
    """Run the CLI in-process; (exit code, stdout, stderr)."""
    try:
        code = main(list(args))
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("command", COMMANDS)
def test_help_of_each_command(capsys, command):
    code, out, _ = cli(capsys, command, "--help")
    assert code == 0 and f"python -m jobs {command}" in out and "--root" in out


def test_help_lists_all_commands():
    out = subprocess.run([sys.executable, "-m", "jobs", "--help"], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0 and all(c in out.stdout for c in COMMANDS)


def test_usage_errors_exit_2(capsys):
    assert cli(capsys)[0] == 2
    assert cli(capsys, "frobnicate")[0] == 2
    assert cli(capsys, "status")[0] == 2  # missing the run name


def test_start_status_list_delete(capsys, root, fake, tmp_path):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("max_steps: 50\ncheckpoint_every: 2\n")
    code, out, err = cli(capsys, "start", "--root", str(root), "--name", "c1", "--config", str(cfg),
                         "--trainer", fake[0], "--json", "--", "--max-steps", "3")
    assert code == 0, err
    started = json.loads(out)
    assert started["command"][-2:] == ["--max-steps", "3"]  # flags passed through after the config
    S.wait_state(root / "c1", "finished")
    code, out, _ = cli(capsys, "status", "c1", "--root", str(root), "--json")
    st = json.loads(out)
    assert code == 0 and (st["state"], st["step"], st["max_steps"], st["pid"]) == ("finished", 3, 3, started["pid"])
    code, out, _ = cli(capsys, "status", "c1", "--root", str(root))
    assert code == 0 and "state: finished" in out
    code, out, _ = cli(capsys, "list", "--root", str(root), "--json")
    assert code == 0 and [r["name"] for r in json.loads(out)] == ["c1"]
    code, out, _ = cli(capsys, "list", "--root", str(root))
    assert code == 0 and out.splitlines()[0].split()[:3] == ["NAME", "STATE", "STEP"] and "c1" in out
    assert "finished" in out and "3/3" in out
    assert cli(capsys, "delete", "c1", "--root", str(root))[0] == 0
    assert not (root / "c1").exists()
    assert "no runs" in cli(capsys, "list", "--root", str(root))[1]


def test_start_with_flags_only(capsys, root, fake):
    code, _, err = cli(capsys, "start", "--root", str(root), "--name", "flags", "--trainer", fake[0], "--",
                       "--max-steps", "2")
    assert code == 0, err
    st = S.wait_state(root / "flags", "finished")
    assert st.step == 2
    job = json.loads((root / "flags" / "job.json").read_text())
    assert "--config" not in job["command"] and job["extra_args"] == ["--max-steps", "2"]


def test_errors_are_reported_with_exit_1(capsys, root, fake, tmp_path):
    assert cli(capsys, "start", "--root", str(root), "--name", "x", "--trainer", fake[0])[0] == 1  # no config
    code, _, err = cli(capsys, "start", "--root", str(root), "--name", "../up", "--trainer", fake[0], "--", "-x")
    assert code == 1 and err.startswith("error:") and not (tmp_path / "up").exists()
    code, _, err = cli(capsys, "status", "missing", "--root", str(root))
    assert code == 1 and "not a run directory" in err
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    code, _, err = cli(capsys, "start", "--root", str(root), "--name", "y", "--config", str(tmp_path / "list.yaml"))
    assert code == 1 and "mapping" in err
    cli(capsys, "start", "--root", str(root), "--name", "twice", "--trainer", fake[0], "--", "--max-steps", "1")
    code, _, err = cli(capsys, "start", "--root", str(root), "--name", "twice", "--trainer", fake[0], "--", "-x")
    assert code == 1 and "never overwritten" in err


def test_job_outlives_the_cli_and_is_controlled_by_later_calls(root, fake, tmp_path):
    """The launching process exits at once; the job keeps running; other processes cancel and resume it."""
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("max_steps: 30\nstep_time: 0.03\ncheckpoint_every: 100\n")

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "jobs", *args, "--root", str(root)], cwd=REPO,
                              capture_output=True, text=True, timeout=60)

    p = run("start", "--name", "bg", "--config", str(cfg), "--trainer", fake[0])
    assert p.returncode == 0, p.stderr
    S.wait_steps(root / "bg", 2)
    st = run_status(root / "bg")
    assert st.state == "running" and pid_alive(st.pid)  # alive although the CLI that started it is gone
    p = run("resume", "bg")
    assert p.returncode == 1 and "still running" in p.stderr
    p = run("cancel", "bg", "--timeout", "10")
    assert p.returncode == 0 and "cancelled" in p.stdout, p.stderr
    p = run("cancel", "bg")
    assert p.returncode == 1 and "nothing to cancel" in p.stderr
    p = run("resume", "bg")
    assert p.returncode == 0, p.stderr
    st = S.wait_state(root / "bg", "finished", timeout=20)
    assert st.step == 30 and st.launches == 2
    assert [r["step"] for r in S.step_rows(root / "bg")] == list(range(1, 31))
    p = run("status", "bg", "--json")
    assert json.loads(p.stdout)["state"] == "finished"
