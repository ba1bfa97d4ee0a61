"""argparse building blocks shared by the command modules: a command group with subcommands, and one
subcommand bound to its handler (a function of the parsed args returning the exit code)."""

from __future__ import annotations

import argparse
import sys


def command_group(sub, name: str, *, help: str, description: str, dest: str):
    """Add command `name` whose work is done by subcommands; returns their subparsers. The bare command
    prints its help to stderr and exits 2."""
    p = sub.add_parser(name, help=help, description=description)
    p.set_defaults(func=lambda args: _usage(p))
    return p.add_subparsers(dest=dest, metavar="SUBCOMMAND")


def subcommand(group, name: str, func, *, help: str, description: str | None = None) -> argparse.ArgumentParser:
    """Add subcommand `name` to `group` (from command_group), run by `func(args)`; returns its parser."""
    p = group.add_parser(name, help=help, description=description)
    p.set_defaults(func=func)
    return p


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2
