"""`export RUN_DIR OUT_DIR`: a standard Hugging Face GPT-2 folder that plain transformers loads."""

from __future__ import annotations

import sys


def register(sub) -> None:
    p = sub.add_parser("export", help="export a run (or checkpoint) as a standard Hugging Face model folder")
    p.add_argument("run_dir", metavar="RUN_DIR", help="run directory (newest checkpoint; RUN_DIR@STEP for another)")
    p.add_argument("out_dir", metavar="OUT_DIR")
    p.add_argument("--allow-live", action="store_true", help="export even though LayerNorms are still live")
    p.add_argument("--overwrite", action="store_true",
                   help="replace OUT_DIR if it holds an earlier lnfree export (nothing else is ever replaced)")
    p.add_argument("--cache-dir", default=None,
                   help="analysis cache whose CE evaluations of this checkpoint go into the model card "
                        "(default: ./lnfree_cache)")
    p.add_argument("--repo-name", help="name used in the model card")
    p.add_argument("--precision-data", metavar="DATASET",
                   help="dataset (registry name or local path) whose first sequences the export measures its LN "
                        "input stds on (default: the run's dataset)")
    p.set_defaults(func=_run)


def _run(args) -> int:
    # local: lnfree_core.export loads torch + transformers (~5.8 s, measured); --help needs neither
    from ..export import ExportError, export_model

    kw = {"cache_dir": args.cache_dir} if args.cache_dir else {}
    try:
        res = export_model(args.run_dir, args.out_dir, allow_live=args.allow_live, overwrite=args.overwrite,
                           repo_name=args.repo_name, precision_data=args.precision_data, **kw)
    except (ExportError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for w in res.warnings:
        print(f"warning: {w}", file=sys.stderr)
    print(f"exported to {res.out_dir} (ln_free={res.ln_free}, max |logit diff| = {res.logit_max_abs_diff:.2e})")
    return 0
