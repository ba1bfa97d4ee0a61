"""`bench`: benchmark accuracy of models through EleutherAI's lm-evaluation-harness (appendix F), cached.

    python -m lnfree_core bench --model gpt2 --model schaeff/gpt2-small_LNFree300
    python -m lnfree_core bench --model demo:ln-free --task piqa --data piqa=piqa_valid.jsonl --json
    python -m lnfree_core bench --model runs/small-lnfree --task-yaml my_mc.yaml --csv bench.csv

Tasks default to the paper's BoolQ, HellaSwag, PIQA and WinoGrande (zero-shot, validation split); the
reported metric is acc_norm where the task has it, else acc, with lm-eval's standard error. A task's
data normally comes from the Hugging Face Hub; --data TASK=FILE reads it from a local json/jsonl file
in the task's own format, --task-yaml FILE adds a task of one's own (e.g. a multiple-choice jsonl).
lm-eval is an optional extra: pip install -r requirements-extras.txt.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

from .eval import UsageError, add_run_args, check_output_paths, print_json, user_errors


def register(sub) -> None:
    p = sub.add_parser("bench", help="BoolQ, HellaSwag, PIQA, WinoGrande accuracy through lm-eval (appendix F)",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("--model", action="append", required=True,
                   help="model spec (Hub id, HF folder, run dir[@STEP], checkpoint, demo:NAME); repeatable")
    p.add_argument("--task", action="append",
                   help="lm-eval task name; repeatable (default: boolq hellaswag piqa winogrande unless --task-yaml "
                        "gives tasks, which are always added)")
    p.add_argument("--data", action="append", metavar="TASK=FILE",
                   help="read TASK's evaluation split from a local json/jsonl file; repeatable")
    p.add_argument("--task-yaml", action="append", metavar="FILE", help="an lm-eval task YAML of one's own")
    p.add_argument("--limit", type=int, help="at most this many documents per task (default: all)")
    p.add_argument("--num-fewshot", type=int, help="few-shot examples (default: the task's, 0 for these)")
    p.add_argument("--batch-size", type=int, default=8, help="(default: %(default)s)")
    add_run_args(p)
    p.add_argument("--json", action="store_true", help="one JSON object per (model, task)")
    p.add_argument("--csv", metavar="PATH", help="write model, task, metric, value, stderr, ... as CSV")
    p.add_argument("--markdown", metavar="PATH", help="write the task x model table as Markdown")
    p.set_defaults(func=_run)


def parse_tasks(tasks: list[str] | None, data: list[str] | None, task_yaml: list[str] | None):
    """The BenchTask list of the arguments; UsageError before any work when one is wrong."""
    # local: analysis.cached_experiments loads torch + transformers (~5.8 s, measured); --help needs neither
    from ..analysis.benchmarks import PAPER_TASKS, _custom_names
    from ..analysis.cached_experiments import BenchTask

    files: dict[str, str] = {}
    for item in data or []:
        task, sep, path = item.partition("=")
        if not sep or not task or not path:
            raise UsageError(f"--data takes TASK=FILE, got {item!r}")
        if not Path(path).expanduser().is_file():
            raise UsageError(f"--data {item}: {path} is not a file")
        files[task] = str(Path(path).expanduser().resolve())
    yamls = []
    for y in task_yaml or []:
        if not Path(y).expanduser().is_file():
            raise UsageError(f"--task-yaml {y}: not a file")
        yamls.append(str(Path(y).expanduser().resolve()))
    try:
        own = {name: y for y in yamls for name in _custom_names([y])}
    except ValueError as e:
        raise UsageError(str(e)) from None
    names = list(dict.fromkeys([*(tasks or []), *own])) or list(PAPER_TASKS)
    extra = sorted(set(files) - set(names))
    if extra:
        raise UsageError(f"--data names tasks that are not evaluated: {extra}")
    return [(t, files.get(t), own.get(t)) for t in names], BenchTask


def _run(args) -> int:
    # local: analysis.cached_experiments loads torch + transformers (~5.8 s, measured); --help needs neither
    from ..analysis.benchmarks import lm_eval_available, MISSING_MESSAGE
    from ..analysis.cached_experiments import benchmark_eval

    try:
        if not lm_eval_available():
            raise UsageError(MISSING_MESSAGE)
        if args.limit is not None and args.limit < 1:
            raise UsageError("--limit must be >= 1")
        if args.batch_size < 1:
            raise UsageError("--batch-size must be >= 1")
        check_output_paths(args.csv, args.markdown)
        tasks, BenchTask = parse_tasks(args.task, args.data, args.task_yaml)
        results = []
        for spec in args.model:
            for name, data_file, yaml_file in tasks:
                bt = BenchTask(name, data_file=data_file, task_yaml=yaml_file, limit=args.limit,
                               num_fewshot=args.num_fewshot)
                res = benchmark_eval(spec, bt, cache_dir=None if args.no_cache else args.cache_dir,
                                     device=args.device, precision=args.precision, batch_size=args.batch_size,
                                     refresh=args.refresh)
                results.append((spec, res))
                if args.json:
                    print_json(res.to_json())
    except (*user_errors(), ValueError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    rows = [r.to_json() for _, r in results]
    if args.csv:
        keys = ["model", "label", "ln_free", "task", "metric", "value", "stderr", "acc", "acc_stderr", "acc_norm",
                "acc_norm_stderr", "n", "local_data"]
        with open(args.csv, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(keys)
            for r in rows:
                w.writerow(["" if r.get(k) is None else r.get(k) for k in keys])
    table = markdown_table(rows)
    if args.markdown:
        Path(args.markdown).write_text(table)
    if not args.json:
        print(table, end="")
    return 0


def markdown_table(rows: list[dict]) -> str:
    """Tasks x models, accuracy in % with its standard error (the paper's Tables 6-9)."""
    models = list(dict.fromkeys(r["label"] for r in rows))
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    cell = {(r["task"], r["label"]): r for r in rows}
    lines = ["| Task | metric | " + " | ".join(models) + " |", "|---|---|" + "---|" * len(models)]
    for t in tasks:
        metric = next(r["metric"] for r in rows if r["task"] == t)
        vals = []
        for m in models:
            r = cell.get((t, m))
            vals.append("-" if r is None else f"{100 * r['value']:.1f} ± {100 * (r['stderr'] or 0):.1f}")
        lines.append(f"| {t} | {metric} | " + " | ".join(vals) + " |")
    return "\n".join(lines) + "\n"
