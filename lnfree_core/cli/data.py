"""`data list | info | filter`: the dataset registry, a dataset's description, the Pile-filtered builder."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from .parsers import command_group, subcommand


def register(sub) -> None:
    """Add the ``data`` command (with ``list``, ``info``, ``filter``) to the CLI's subparsers."""
    dsub = command_group(sub, "data", help="datasets: list the registry, describe one, build a Pile-filtered set",
                         description="Datasets of lnfree: registry names (owt, pile, pile-filtered) or local "
                                     "paths (.parquet/.jsonl/.txt files, folders, save_to_disk folders).",
                         dest="data_command")

    ls = subcommand(dsub, "list", _list, help="the named datasets of the registry")
    ls.add_argument("--json", action="store_true", help="print JSON instead of a table")

    info = subcommand(dsub, "info", _info, help="describe a dataset (name or local path): splits and sizes")
    info.add_argument("dataset", metavar="NAME_OR_PATH")
    info.add_argument("--seq-len", type=int, default=1024, help="sequence length for counting sequences")
    info.add_argument("--json", action="store_true", help="print JSON")

    flt = subcommand(
        dsub, "filter", _filter, help="keep target sequences without tokens absent from the reference (appendix E)",
        description="Tokens present in the first N sequences of TARGET and absent from the first N of "
                    "REFERENCE are reported (like Table 5); the scanned TARGET sequences containing none "
                    "of them are written to OUT as train.parquet (+ tokens_removed.json, "
                    "filter_report.json). The paper: --reference owt --target pile --scan 1000000 --keep 10000.")
    flt.add_argument("--reference", required=True, metavar="NAME_OR_PATH", help="e.g. owt")
    flt.add_argument("--target", required=True, metavar="NAME_OR_PATH", help="e.g. pile")
    flt.add_argument("--out", required=True, metavar="DIR", help="output folder (new or empty)")
    flt.add_argument("--scan", type=int, default=None, metavar="N",
                     help="sequences scanned in each dataset (default 100000)")
    flt.add_argument("--seq-len", type=int, default=1024, metavar="T", help="tokens per sequence (default 1024)")
    flt.add_argument("--keep", type=int, default=None, metavar="K", help="write at most K kept sequences")
    flt.add_argument("--top", type=int, default=20, help="rows of the token table to print (default 20)")
    flt.add_argument("--json", action="store_true", help="print the full report as JSON")

    ref = subcommand(
        dsub, "owt-reference", _owt_reference, help="rebuild the reference's OWT validation split from raw OpenWebText",
        description="The paper's OWT numbers came from a seeded 0.0005 split of raw OpenWebText "
                    "(train_test_split(test_size=0.0005, seed=2357)), not from the first 4,400 rows of the "
                    "tokenized Hub set that `owt` uses. This writes that split, tokenized and cut into rows as the "
                    "reference did, to OUT/validation.parquet; evaluate with --dataset OUT.")
    ref.add_argument("--raw", default="Skylion007/openwebtext", metavar="HUB_ID_OR_DIR",
                     help="raw OpenWebText: Hub id (default: %(default)s) or a local copy (save_to_disk folder)")
    ref.add_argument("--out", required=True, metavar="DIR", help="output folder (new or empty)")
    ref.add_argument("--seed", type=int, default=2357, help="split seed (the reference: %(default)s)")


def _owt_reference(args) -> int:
    # local: lnfree_core.data (pyarrow and more) adds ~0.13 s CPU to --help's start-up (measured); --help needs none
    from ..data.owt_reference import build_reference_owt

    if not 0 <= args.seed < 2**32:  # numpy's seed range: found now, not after reading 8M documents
        print(f"error: --seed must be in 0 .. 2**32 - 1, got {args.seed}", file=sys.stderr)
        return 2
    if str(args.raw).startswith((".", "/", "~")) and not os.path.isdir(os.path.expanduser(args.raw)):
        print(f"error: --raw {args.raw}: no such folder (give a save_to_disk folder of raw OpenWebText, "
              "or a Hub id such as Skylion007/openwebtext)", file=sys.stderr)
        return 2
    try:
        path = build_reference_owt(args.raw, args.out, seed=args.seed)
    except (OSError, ValueError, ConnectionError) as e:
        print(f"error: cannot build the reference OWT split from {args.raw!r}: {e}", file=sys.stderr)
        return 2
    print(f"wrote {path}; evaluate with --dataset {Path(args.out)}")
    return 0


def _fail(exc: Exception) -> int:
    """Report ``exc``; exit 2 for bad input (unknown dataset, bad argument), 1 otherwise (e.g. no Hub)."""
    print(f"error: {exc}", file=sys.stderr)
    return 2 if isinstance(exc, ValueError) else 1


def _list(args) -> int:
    # local: lnfree_core.data (pyarrow and more) adds ~0.13 s CPU to --help's start-up (measured); --help needs none
    from lnfree_core.data import list_datasets

    specs = list_datasets()
    if args.json:
        print(json.dumps([{"name": s.name, "hub_id": s.hub_id, "splits": s.split_names, "column": s.column,
                           "size": s.size, "description": s.description, "aliases": list(s.aliases)}
                          for s in specs], indent=1))
        return 0
    for s in specs:
        print(f"{s.name:<14} {s.hub_id}\n{'':<14} splits: {', '.join(s.split_names)}; {s.size}\n"
              f"{'':<14} {s.description}")
    print("\nAlso accepted: a local .parquet/.jsonl/.txt file, a folder of them, or a save_to_disk folder.")
    return 0


def _info(args) -> int:
    # local: lnfree_core.data (pyarrow and more) adds ~0.13 s CPU to --help's start-up (measured); --help needs none
    from lnfree_core.data import dataset_info

    try:
        info = dataset_info(args.dataset, seq_len=args.seq_len)
    except (OSError, RuntimeError, ValueError) as exc:
        return _fail(exc)
    if args.json:
        print(json.dumps(info, indent=1))
        return 0
    where = info["hub_id"] or info["path"]
    print(f"{info['name']} ({info['source']}, {info['format']}, column {info['column']}): {where}")
    print(f"  {info['description']}")
    if info["size"]:
        print(f"  size: {info['size']}")
    for name, s in info["splits"].items():
        sizes = ", ".join(f"{v:,} {k}" for k, v in s.items() if k in ("rows", "tokens", "sequences") and v is not None)
        mark = " (evaluation)" if name == info["eval_split"] else ""
        print(f"  split {name}{mark}: {sizes or 'size unknown'}")
    return 0


def _filter(args) -> int:
    # local: lnfree_core.data (pyarrow and more) adds ~0.13 s CPU to --help's start-up (measured); --help needs none
    from lnfree_core.data.filter import DEFAULT_SCAN, build_filtered

    try:
        report = build_filtered(args.reference, args.target, args.out, scan=args.scan or DEFAULT_SCAN,
                                seq_len=args.seq_len, keep=args.keep)
    except (OSError, RuntimeError, ValueError) as exc:
        return _fail(exc)
    if args.json:
        print(json.dumps(report.to_dict(), indent=1))
        return 0
    print(f"scanned {report.reference_sequences:,} sequences of {report.reference} and "
          f"{report.target_sequences:,} of {report.target} ({report.seq_len} tokens each)")
    print(f"{len(report.removed_tokens)} tokens occur in {report.target} but not in {report.reference}:")
    print(report.table(limit=args.top))
    print(f"kept {report.kept_sequences:,} of {report.target_sequences:,} sequences -> {report.out_dir}")
    return 0
