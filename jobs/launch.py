"""Starting and resuming training jobs as detached subprocesses.

A job runs in its own session and process group (so it survives the app that started it, and
cancel can signal all of its processes), with stdout and stderr appended to RUN_DIR/train.log.
The launching process keeps a daemon thread that reaps the child and records its exit code.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lnfree_core.rundir import LOG_FILE, REQUEST_FILE, ensure_trailing_newline, load_job, write_job

from .errors import JobError, NotARunError, RunActiveError, RunExistsError, RunFinishedError
from .proc import TOKEN_ENV, identity
from .runs import resolve_run_dir, run_dir_for, run_lock
from .status import RunStatus, run_status

DEFAULT_TRAINER: tuple[str, ...] = ("-m", "lnfree_core")
_PROJECT_ROOT = str(Path(__file__).resolve().parent.parent)


@dataclass
class RunHandle:
    """A launched job. `process` is set only in the process that launched it."""

    name: str
    run_dir: Path
    pid: int
    pgid: int
    command: list[str]
    process: subprocess.Popen | None = field(default=None, repr=False)

    def status(self) -> RunStatus:
        """The run's current status (see jobs.status.run_status)."""
        return run_status(self.run_dir)

    def wait(self, timeout: float | None = None) -> RunStatus:
        """Wait until the launched process exits (TimeoutError after `timeout` s); return the status."""
        if self.process is None:
            raise JobError("this handle was not created by the launching process; poll status() instead")
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired as e:
            raise TimeoutError(f"run {self.name!r} still running after {timeout} s") from e
        return self.status()


def record_exit(run_dir: str | os.PathLike, index: int, pid: int, returncode: int) -> None:
    """Store the exit code of launch number `index` (if it is still the launch with `pid`)."""
    with run_lock(run_dir):
        job = load_job(run_dir)
        if job is None or index >= len(job["history"]) or job["history"][index].get("pid") != pid:
            return
        job["history"][index]["returncode"] = returncode
        write_job(run_dir, job)


def build_command(
    run_dir: str | os.PathLike,
    *,
    python: str = sys.executable,
    trainer: Sequence[str] = DEFAULT_TRAINER,
    nproc: int = 1,
    resume: bool = False,
    extra_args: Sequence[str] = (),
    with_config: bool = True,
) -> list[str]:
    """The trainer command line for `run_dir`.

    `trainer` is what follows the interpreter: ("-m", "lnfree_core") or (script.py,). With
    nproc > 1 the trainer runs under `python -m torch.distributed.run --standalone`.
    `with_config=False` leaves out `--config RUN_DIR/request.yaml` (runs set up by flags alone).
    """
    if not isinstance(nproc, int) or isinstance(nproc, bool) or nproc < 1:
        raise ValueError(f"nproc must be a positive integer, got {nproc!r}")
    rd = os.path.abspath(run_dir)
    tail = ["train", *(["--config", os.path.join(rd, REQUEST_FILE)] if with_config else []), "--out", rd]
    tail += ["--resume"] if resume else []
    tail += [str(a) for a in extra_args]
    if nproc == 1:
        return [python, *trainer, *tail]
    return [python, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc), *trainer, *tail]


def _plain(value: Any) -> Any:
    """Config values as plain YAML types (tuples become lists, paths strings)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value


def _child_env(token: str) -> dict[str, str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1", **{TOKEN_ENV: token})
    env["PYTHONPATH"] = os.pathsep.join(p for p in (_PROJECT_ROOT, env.get("PYTHONPATH")) if p)
    return env


def _reap(proc: subprocess.Popen, run_dir: Path, index: int) -> None:
    returncode = proc.wait()
    try:
        record_exit(run_dir, index, proc.pid, returncode)
    except OSError:
        pass  # the run directory was deleted meanwhile


def _launch(run_dir: Path, job: dict[str, Any], *, resume: bool) -> RunHandle:
    """Start the job described by `job` (python, trainer, nproc, extra_args) and record it."""
    cmd = build_command(
        run_dir, python=job["python"], trainer=job["trainer"], nproc=job["nproc"], resume=resume,
        extra_args=job["extra_args"], with_config=job.get("with_config", True),
    )
    started, token = time.time(), uuid.uuid4().hex
    with open(run_dir / LOG_FILE, "ab") as log:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started))
        log.write(f"=== jobs: {'resume' if resume else 'start'} at {stamp}: {shlex.join(cmd)}\n".encode())
        log.flush()
        try:
            proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, env=_child_env(token), close_fds=True,
            )
        except OSError as e:
            raise JobError(f"could not launch {cmd[0]!r}: {e}") from e
    launch = {"command": cmd, "pid": proc.pid, "pgid": proc.pid, "nproc": job["nproc"], "started": started,
              "resume": resume, "token": token, **identity(proc.pid)}
    history = [*job.get("history", []), launch]
    try:
        write_job(run_dir, {**job, "history": history})
    except BaseException:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise
    threading.Thread(target=_reap, args=(proc, run_dir, len(history) - 1), daemon=True).start()
    return RunHandle(name=job["name"], run_dir=run_dir, pid=proc.pid, pgid=proc.pid, command=cmd, process=proc)


def start_run(
    root: str | os.PathLike,
    name: str,
    config: Mapping[str, Any],
    *,
    nproc: int = 1,
    python: str = sys.executable,
    trainer: Sequence[str] = DEFAULT_TRAINER,
    extra_args: Sequence[str] = (),
) -> RunHandle:
    """Create ROOT/NAME, write request.yaml (`config` with "out" set to the run directory) and run
    `python -m lnfree_core train --config RUN_DIR/request.yaml --out RUN_DIR [extra_args]` there.

    `extra_args` are trainer flags placed after `--out` (they override the config; reused on
    resume). With an empty `config`, `--config` is left out and the flags alone set the run up.
    Refused with RunExistsError if the run directory exists: runs are never overwritten.
    """
    run_dir = run_dir_for(root, name)
    if not isinstance(config, Mapping):
        raise TypeError(f"config must be a mapping, got {type(config).__name__}")
    extra = [str(a) for a in extra_args]
    build_command(run_dir, python=python, trainer=trainer, nproc=nproc)  # validates nproc early
    header = "# lnfree run request, written by jobs/ at launch\n"
    if extra:
        header += "# trainer flags given on top of this: " + " ".join(shlex.quote(a) for a in extra) + "\n"
    try:
        text = header + yaml.safe_dump({**_plain(config), "out": str(run_dir)}, sort_keys=False)
    except yaml.YAMLError as e:
        raise ValueError(f"config cannot be written as YAML: {e}") from e
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    try:
        run_dir.mkdir()
    except FileExistsError:
        raise RunExistsError(
            f"run {name!r} already exists in {run_dir.parent}; a run directory is never overwritten: "
            "choose another name, or resume or delete that run"
        ) from None
    job = {"name": name, "python": python, "trainer": list(trainer), "nproc": nproc, "extra_args": extra,
           "with_config": bool(config), "history": []}
    try:
        (run_dir / REQUEST_FILE).write_text(text, encoding="utf-8")
        return _launch(run_dir, job, resume=False)
    except BaseException:
        shutil.rmtree(run_dir, ignore_errors=True)  # only what this call created; nothing runs there
        raise


def resume_run(
    root_or_run_dir: str | os.PathLike,
    name: str | None = None,
    *,
    nproc: int | None = None,
    python: str | None = None,
    trainer: Sequence[str] | None = None,
    extra_args: Sequence[str] | None = None,
) -> RunHandle:
    """Relaunch a stopped run with --resume in its own directory (ROOT and NAME, or RUN_DIR alone).

    Settings not given are those of the last launch. Refused (RunActiveError) while the run's
    process is alive and (RunFinishedError) once it has finished.
    """
    run_dir = resolve_run_dir(root_or_run_dir, name)
    if not run_dir.is_dir():
        raise NotARunError(f"{run_dir} is not a run directory (it does not exist)")
    with run_lock(run_dir):
        st = run_status(run_dir)
        if st.active:
            raise RunActiveError(
                f"run {st.name!r} is still {st.state} (pid {st.pid}); cancel it or wait for it to stop before resuming"
            )
        if st.state == "finished":
            raise RunFinishedError(f"run {st.name!r} has finished; there is nothing to resume")
        old = load_job(run_dir) or {}
        with_config = old.get("with_config", (run_dir / REQUEST_FILE).is_file())
        if with_config and not (run_dir / REQUEST_FILE).is_file():
            raise JobError(f"cannot resume {st.name!r}: {run_dir / REQUEST_FILE} is missing")
        job = {
            **old,
            "name": old.get("name") or run_dir.name,
            "python": python or old.get("python") or sys.executable,
            "trainer": list(trainer or old.get("trainer") or DEFAULT_TRAINER),
            "nproc": nproc or old.get("nproc") or 1,
            "extra_args": list(extra_args if extra_args is not None else old.get("extra_args") or []),
            "with_config": bool(with_config),
            "history": [h for h in old.get("history", []) if h.get("pid") is not None],
        }
        ensure_trailing_newline(run_dir)  # a hard kill may have left half a metrics line
        return _launch(run_dir, job, resume=True)

