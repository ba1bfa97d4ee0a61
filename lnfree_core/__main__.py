"""`python -m lnfree_core <command> ...`: every command of lnfree (each has --help)."""

from __future__ import annotations

import argparse
import sys

import lnfree_core.demo  # noqa: F401  (plug-in: registers the demo: model and dataset names)

# Each module defines register(subparsers); a command's handler returns the process exit code. The
# command modules import torch/transformers inside their handlers, so `--help` stays fast.
from .cli import analyze, bench, data, demo, eval as eval_cmd, export, interop, push, schedule, train

COMMANDS = (schedule, train, export, data, demo, eval_cmd, analyze, bench, push, interop)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m lnfree_core",
        description="lnfree: remove LayerNorm from GPT-2-family models by fine-tuning (FakeLN), and study what changes.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for module in COMMANDS:
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
