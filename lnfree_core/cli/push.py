"""`push EXPORT_DIR --repo-id USER/NAME`: publish an export folder to the Hugging Face Hub.

The token comes from HF_TOKEN (or the login saved by `hf auth login`), or from the first line of
standard input with --token-stdin; it is never accepted as a command-line value (that would leave it
in the shell history and the process list) and never printed.
Exit codes: 0 pushed, 1 the push failed (network, permissions, Hub error), 2 bad input.
"""

from __future__ import annotations

import argparse
import getpass
import sys


def register(sub) -> None:
    """Add the ``push`` command to the CLI's subparsers."""
    p = sub.add_parser(
        "push", help="publish an export folder to the Hugging Face Hub",
        description="Create the Hub repo (if needed) and upload EXPORT_DIR (made by `python -m lnfree_core "
                    "export RUN_DIR OUT_DIR`). The token is read from HF_TOKEN or the saved login, or from "
                    "stdin with --token-stdin. Exit codes: 0 pushed, 1 push failed, 2 bad input.")
    p.add_argument("export_dir", metavar="EXPORT_DIR", help="folder with config.json, *.safetensors, README.md")
    p.add_argument("--repo-id", required=True, metavar="USER/NAME", help="target repository, e.g. alice/gpt2-ln-free")
    p.add_argument("--private", action="store_true", help="create the repo private (refused if it exists public)")
    p.add_argument("--endpoint", metavar="URL", help="Hub base URL (default: HF_ENDPOINT or https://huggingface.co)")
    p.add_argument("--commit-message", metavar="MSG", help="message of the upload commit")
    p.add_argument("--token-stdin", action="store_true", help="read the token from the first line of stdin")
    # Caught so that argparse never echoes a token typed as a value ("unrecognized arguments: hf_...").
    p.add_argument("--token", dest="token_value", nargs="?", const="", default=None, help=argparse.SUPPRESS)
    p.set_defaults(func=_run)


def _read_token_stdin() -> str | None:
    """The token from the first line of stdin (a prompt without echo when stdin is a terminal)."""
    if sys.stdin.isatty():
        return getpass.getpass("Hugging Face token: ").strip() or None
    return sys.stdin.readline().strip() or None


def _run(args) -> int:
    """Push; exit 0 on success, 1 when the push failed, 2 on bad input."""
    # local: lnfree_core.publish loads torch + transformers (~5.8 s via models.py, measured); --help needs neither
    from ..publish import PublishError, PublishInputError, push_export

    if args.token_value is not None:
        print("error: --token is not accepted (it would stay in the shell history and the process list); "
              "set HF_TOKEN, run `hf auth login`, or pipe the token into --token-stdin", file=sys.stderr)
        return 2
    token = None
    if args.token_stdin:
        token = _read_token_stdin()
        if token is None:
            print("error: --token-stdin was given but standard input held no token", file=sys.stderr)
            return 2
    try:
        res = push_export(args.export_dir, args.repo_id, private=args.private, token=token,
                          endpoint=args.endpoint, commit_message=args.commit_message,
                          progress=lambda msg: print(msg, file=sys.stderr, flush=True))
    except PublishInputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except PublishError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"pushed {args.export_dir} to {res.url} (commit {res.commit})")
    return 0
