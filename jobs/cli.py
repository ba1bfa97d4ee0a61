"""Command line: python -m jobs list|start|cancel|resume|status|delete [--root DIR] ...

Exit codes: 0 success, 1 refused or failed (the message says why), 2 usage error.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from typing import Sequence

import yaml

from .control import cancel_run, delete_run
from .errors import JobError
from .launch import DEFAULT_TRAINER, resume_run, start_run
from .runs import run_dir_for
from .status import RunStatus, list_runs, run_status

DEFAULT_ROOT = "runs"


def _fmt_time(t: float | None) -> str:
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else "-"
    except (OverflowError, OSError, ValueError):  # a garbage time in a hand-edited status.json
        return "?"


def _fmt_row(s: RunStatus) -> list[str]:
    loss = (s.last_metrics or {}).get("loss")
    steps = f"{s.step}/{s.max_steps}" if s.max_steps is not None else str(s.step)
    return [s.name, s.state, steps, f"{loss:.4g}" if isinstance(loss, (int, float)) else "-",
            _fmt_time(s.started), s.reason or ""]


def _print_table(rows: list[list[str]]) -> None:
    head = ["NAME", "STATE", "STEP", "LOSS", "STARTED", "REASON"]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head) - 1)]
    for r in [head, *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1])


def _print_status(s: RunStatus) -> None:
    for key in ("name", "run_dir", "state", "step", "max_steps", "reason", "alive", "pid", "nproc", "launches",
                "returncode"):
        print(f"{key}: {getattr(s, key)}")
    print(f"started: {_fmt_time(s.started)}")
    print(f"updated: {_fmt_time(s.updated)}")
    print(f"last_metrics: {json.dumps(s.last_metrics)}")


def _load_config(path: str | None) -> dict:
    if path is None:
        return {}
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except (OSError, yaml.YAMLError) as e:
        raise JobError(f"cannot read config {path}: {e}") from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise JobError(f"config {path} must hold a mapping of settings, not {type(data).__name__}")
    return data


def _cmd_list(a: argparse.Namespace) -> int:
    runs = list_runs(a.root)
    if a.json:
        print(json.dumps([s.to_dict() for s in runs], indent=1))
    elif runs:
        _print_table([_fmt_row(s) for s in runs])
    else:
        print(f"no runs in {a.root}")
    return 0


def _cmd_start(a: argparse.Namespace) -> int:
    if a.config is None and not a.trainer_args:
        raise JobError("give --config FILE and/or the trainer's flags after --")
    h = start_run(a.root, a.name, _load_config(a.config), nproc=a.nproc, python=a.python,
                  trainer=shlex.split(a.trainer), extra_args=a.trainer_args)
    if a.json:
        print(json.dumps({"name": h.name, "run_dir": str(h.run_dir), "pid": h.pid, "command": h.command}))
    else:
        print(f"started run {h.name!r} (pid {h.pid}) in {h.run_dir}; log: {h.run_dir / 'train.log'}")
    return 0


def _cmd_status(a: argparse.Namespace) -> int:
    s = run_status(run_dir_for(a.root, a.name))
    if a.json:
        print(json.dumps(s.to_dict(), indent=1))
    else:
        _print_status(s)
    return 0


def _cmd_cancel(a: argparse.Namespace) -> int:
    s = cancel_run(run_dir_for(a.root, a.name), timeout=a.timeout, checkpoint_wait=a.checkpoint_wait)
    print(f"run {s.name!r}: {s.state} at step {s.step}" + (f" ({s.reason})" if s.reason else ""))
    return 0


def _cmd_resume(a: argparse.Namespace) -> int:
    h = resume_run(a.root, a.name, nproc=a.nproc)
    print(f"resumed run {h.name!r} (pid {h.pid}) in {h.run_dir}")
    return 0


def _cmd_delete(a: argparse.Namespace) -> int:
    rd = run_dir_for(a.root, a.name)
    delete_run(rd)
    print(f"deleted {rd}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (one sub-command per operation, each with --help)."""
    p = argparse.ArgumentParser(prog="python -m jobs", description="Start, watch and control lnfree training runs.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--root", default=DEFAULT_ROOT, help="runs root folder (default: ./runs)")

    def add(name: str, func, help_: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, parents=[common], help=help_, description=help_)
        sp.set_defaults(func=func)
        return sp

    sp = add("list", _cmd_list, "list runs, newest first")
    sp.add_argument("--json", action="store_true", help="print a JSON list of statuses")
    sp = add("start", _cmd_start, "start a new run: start --name NAME [--config FILE] [-- TRAINER FLAGS...]")
    sp.add_argument("--name", required=True, help="run name: letters, digits, - _ . (no leading dot, <= 100)")
    sp.add_argument("--config", help="YAML/JSON file with the training settings (written to request.yaml)")
    sp.add_argument("--nproc", type=int, default=1, help="processes (GPUs); > 1 runs under torch.distributed.run")
    sp.add_argument("--python", default=sys.executable, help="interpreter for the trainer (default: this one)")
    sp.add_argument("--trainer", default=" ".join(DEFAULT_TRAINER),
                    help="what follows the interpreter (default: '-m lnfree_core'; or a script path)")
    sp.add_argument("--json", action="store_true", help="print the new run as JSON")
    sp = add("status", _cmd_status, "show the status of one run")
    sp.add_argument("name", help="run name")
    sp.add_argument("--json", action="store_true", help="print the status as JSON")
    sp = add("cancel", _cmd_cancel, "cancel a run (SIGTERM, then SIGKILL after --timeout)")
    sp.add_argument("name", help="run name")
    sp.add_argument("--timeout", type=float, default=30.0,
                    help="seconds to wait before SIGKILL (default 30); extended while a checkpoint is being written")
    sp.add_argument("--checkpoint-wait", type=float, default=3600.0,
                    help="longest extra wait for a checkpoint in progress, in seconds (default 3600)")
    sp = add("resume", _cmd_resume, "resume a failed or cancelled run from its last checkpoint")
    sp.add_argument("name", help="run name")
    sp.add_argument("--nproc", type=int, default=None, help="processes (default: as last launched)")
    sp = add("delete", _cmd_delete, "delete a stopped run and all its files")
    sp.add_argument("name", help="run name")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    passthrough: list[str] = []
    if argv[:1] == ["start"] and "--" in argv:  # other commands keep argparse's own meaning of --
        i = argv.index("--")
        argv, passthrough = argv[:i], argv[i + 1 :]
    args = build_parser().parse_args(argv)
    args.trainer_args = passthrough
    try:
        return args.func(args)
    except (JobError, ValueError, TypeError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
