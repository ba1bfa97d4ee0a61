"""`eval`: cross-entropy of one or more models on one or more datasets (Table 1), cached.

    python -m lnfree_core eval --model gpt2 --dataset pile-filtered --n 1000 --json
    python -m lnfree_core eval --model gpt2 --label "GPT-2 Small original" \\
        --model runs/small-lnfree --label "GPT-2 Small LN-free" \\
        --dataset owt --dataset pile --markdown table1.md --csv table1.csv

Per (model, dataset) it reports the mean per-token CE, the median and the 2.5-97.5, 1-99 and 0.1-99.9
percentile ranges over all scored tokens (the paper's "95th" and "99.9th perc" ranges are the first and
the last). The token after an EOT is predicted and scored like any other token, and EOT targets are
scored (Table 1 counts them). With --json, one JSON object per line: {"model", "dataset", "tokens",
"mean", "median", "p2.5-97.5", "p1-99", "p0.1-99.9", ...}. Per-token losses are cached (--cache-dir)
and reused by `analyze outliers`.
"""

from __future__ import annotations

import json
import math
import os
import sys

from ..analysis.cache import DEFAULT_CACHE_DIR
from ..analysis.tables import TableEntry, ce_table


# ------------------------------------------------------------------ helpers shared with `analyze`
def add_common_args(p, *, n_default: int | None, seq_len_default: int, batch_default: int,
                    precision_default: str) -> None:
    p.add_argument("--split", help="dataset split (default: the dataset's evaluation split)")
    p.add_argument("--n", type=int, default=n_default,
                   help="number of sequences (default: %(default)s; None = the dataset's evaluation size)")
    p.add_argument("--seq-len", type=int, default=None,
                   help=f"tokens per sequence (default: {seq_len_default}, or the model's context if shorter)")
    p.set_defaults(seq_len_default=seq_len_default)
    p.add_argument("--batch-size", type=int, default=batch_default, help="sequences per batch (default: %(default)s)")
    add_run_args(p, precision_default=precision_default,
                 precision_help="auto = bf16 autocast on CUDA, fp32 on CPU (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="machine-readable output (one JSON object per line)")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")


def add_run_args(p, *, precision_default: str = "fp32", precision_help: str = "(default: %(default)s)") -> None:
    """--device, --precision, --cache-dir, --no-cache, --refresh: where a cached computation runs and
    whether it reuses the cache (read by run_kwargs)."""
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default: auto)")
    p.add_argument("--precision", default=precision_default, choices=["auto", "fp32", "bf16"], help=precision_help)
    p.add_argument("--cache-dir", default=DEFAULT_CACHE_DIR, help="result cache directory (default: %(default)s)")
    p.add_argument("--no-cache", action="store_true", help="neither read nor write the cache")
    p.add_argument("--refresh", action="store_true", help="recompute and overwrite cached results")


def fit_args_seq_len(args, specs: list[str]) -> None:
    """Set args.seq_len before any work: the command's default capped at the models' context, or the
    --seq-len given, which must fit every model (UsageError otherwise: exit 2)."""
    # local: lnfree_core.models loads torch + transformers (~5.8 s, measured); --help needs neither
    from ..models import fit_seq_len

    try:
        args.seq_len = fit_seq_len(args.seq_len, args.seq_len_default, list(specs))
    except ValueError as e:
        raise UsageError(str(e)) from None


def check_data_args(args) -> None:
    """UsageError, before any model or data is read, for sizes no analysis can use."""
    if args.n is not None and args.n < 1:
        raise UsageError(f"--n must be >= 1 (or left out for the dataset's evaluation size), got {args.n}")
    if args.seq_len is not None and args.seq_len < 2:
        raise UsageError(f"--seq-len must be >= 2 (one token and its next-token target), got {args.seq_len}")
    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be >= 1, got {args.batch_size}")


def check_output_paths(*paths: str | None) -> None:
    """UsageError, before any work, for an output file that cannot be written (its folder is missing,
    or the path is a folder): a long computation must not end in a traceback at the last line."""
    for path in paths:
        if not path:
            continue
        folder = os.path.dirname(os.path.abspath(path))
        if os.path.isdir(path):
            raise UsageError(f"{path} is a folder; give a file path to write")
        if not os.path.isdir(folder):
            raise UsageError(f"cannot write {path}: folder {folder} does not exist (create it first)")


def data_spec(args, dataset: str):
    # local: analysis.cached loads torch + transformers (~5.8 s, measured); --help needs neither
    from ..analysis.cached import DataSpec

    return DataSpec(dataset=dataset, split=args.split, n=args.n, seq_len=args.seq_len)


def run_kwargs(args, label: str = "") -> dict:
    return {"cache_dir": None if args.no_cache else args.cache_dir, "device": args.device,
            "precision": args.precision, "batch_size": args.batch_size, "refresh": args.refresh,
            "progress": None if args.quiet or not sys.stderr.isatty() else _progress(label)}


def _progress(label: str):
    def report(done: int, total: int) -> None:
        print(f"\r{label}: {done}/{total} sequences", end="\n" if done >= total else "", file=sys.stderr, flush=True)
    return report


def jsonable(obj):
    """Replace non-finite floats by None so the output is strict JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    return obj


def print_json(obj) -> None:
    print(json.dumps(jsonable(obj)))


class UsageError(ValueError):
    """Inconsistent command-line arguments."""


def user_errors() -> tuple[type[BaseException], ...]:
    """Errors that mean a bad spec, name or missing resource (exit code 2, no traceback)."""
    # local: analysis.cached loads torch + transformers (~5.8 s, measured); --help needs neither
    from ..analysis.cached import EmptyDataError
    from ..data import DatasetNotFoundError, HubUnavailableError
    from ..data.model_fit import TokenizerMismatchError

    return (OSError, DatasetNotFoundError, HubUnavailableError, EmptyDataError, UsageError, TokenizerMismatchError)


# ------------------------------------------------------------------ eval
def register(sub) -> None:
    p = sub.add_parser("eval", help="cross-entropy of models on datasets (Table 1), cached",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("--model", action="append", required=True,
                   help="model spec (Hub id, HF folder, run dir[@STEP], checkpoint, demo:NAME); repeatable")
    p.add_argument("--label", action="append", help="display name of the model at the same position; repeatable")
    p.add_argument("--group", action="append",
                   help="Table-1 group of the model at the same position (best is marked per group); repeatable")
    p.add_argument("--dataset", action="append", required=True,
                   help="dataset name (owt, pile, pile-filtered) or local path; repeatable")
    add_common_args(p, n_default=None, seq_len_default=1024, batch_default=8, precision_default="auto")
    p.add_argument("--markdown", metavar="PATH", help="write Table 1 as Markdown")
    p.add_argument("--csv", metavar="PATH", help="write Table 1 as CSV")
    p.set_defaults(func=_run)


def _aligned(values: list[str] | None, n: int, what: str) -> list[str | None]:
    if values is None:
        return [None] * n
    if len(values) != n:
        raise UsageError(f"give one {what} per --model ({n}), got {len(values)}")
    return list(values)


def _run(args) -> int:
    # local: analysis.cached loads torch + transformers (~5.8 s, measured); --help needs neither
    from ..analysis.cached import ce_eval

    try:
        check_data_args(args)
        check_output_paths(args.markdown, args.csv)
        labels = _aligned(args.label, len(args.model), "--label")
        groups = _aligned(args.group, len(args.model), "--group")
        fit_args_seq_len(args, args.model)
        entries = []
        for spec, label, group in zip(args.model, labels, groups):
            for ds in args.dataset:
                res = ce_eval(spec, data_spec(args, ds), **run_kwargs(args, f"{label or spec} on {ds}"))
                s = res.summary
                name = label or res.label
                if args.json:
                    print_json({**res.to_json(), "label": name})
                else:
                    ranges = "  ".join(f"P{k[1:]} [{lo:.4f}, {hi:.4f}]" for k, (lo, hi) in s.ranges.items())
                    print(f"{name} on {ds}: mean {s.mean:.4f}  median {s.median:.4f}  {ranges}  (over {res.losses.shape[0]} "
                          f"sequences of {args.seq_len} tokens, {s.tokens} predicted tokens, "
                          f"{'LN-free' if res.ln_free else 'with LN'})")
                entries.append(TableEntry(name, ds, s.mean, ln_free=res.ln_free, group=group))
    except user_errors() as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    table = ce_table(entries)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(table.to_markdown())
    if args.csv:
        with open(args.csv, "w") as f:
            f.write(table.to_csv())
    if not args.json and len(entries) > 1:
        print()
        print(table.to_markdown(), end="")
    return 0
