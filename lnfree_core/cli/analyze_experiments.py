"""`analyze ioi` and `analyze overconfidence`: the paper's experiments over several models at once.

    analyze ioi             activation vs attribution patching of resid_pre on IOI (section 5.2, Fig. 2)
    analyze overconfidence  entropy vs CE, reliability diagram and ECE, confidence-neuron ablation (5.4, 6.1)

Both take --model several times (e.g. original, vanilla and LN-free), print text or one JSON object per
line with --json, and write a long CSV with --csv PATH.
"""

from __future__ import annotations

import csv
import sys

from .eval import (UsageError, add_common_args, add_run_args, check_data_args, check_output_paths, data_spec,
                   fit_args_seq_len, print_json, run_kwargs, user_errors)


def register_experiments(sub) -> None:
    """Add the two subcommands to `analyze`'s subparsers."""
    i = sub.add_parser("ioi", help="activation vs attribution patching on IOI (section 5.2, Fig. 2)",
                       description="Activation patching and attribution patching of the residual stream before "
                                   "every block at every position, clean into corrupted IOI prompts, with the "
                                   "normalised logit difference; the per-layer improvement score of an LN-free "
                                   "model over its vanilla counterpart.")
    i.add_argument("--model", action="append", required=True,
                   help="model spec (Hub id, HF folder, run dir[@STEP], checkpoint, demo:NAME); repeatable")
    i.add_argument("--vanilla", help="the model with LN of the improvement score (default: the last --model with LN)")
    i.add_argument("--ln-free", help="the LN-free model of the improvement score (default: the only LN-free model)")
    i.add_argument("--n", type=int, default=480, help="IOI prompts (default: %(default)s)")
    i.add_argument("--seed", type=int, default=0, help="seed of the prompt set (default: %(default)s)")
    i.add_argument("--batch-size", type=int, default=16, help="prompts per clean/corrupted/backward pass")
    i.add_argument("--rows-per-forward", type=int, default=256,
                   help="(prompt, site) pairs patched in one forward pass (default: %(default)s)")
    add_run_args(i)
    i.add_argument("--json", action="store_true", help="one JSON object per model, then the improvement score")
    i.add_argument("--csv", metavar="PATH", help="write model, layer, position, activation, attribution, error")
    i.add_argument("--quiet", action="store_true", help="no progress on stderr")
    i.set_defaults(func=_ioi)

    o = sub.add_parser("overconfidence", help="entropy vs CE, reliability and ECE, confidence-neuron ablation "
                                              "(sections 5.4, 6.1)")
    o.add_argument("--model", action="append", required=True, help="model spec; repeatable")
    o.add_argument("--dataset", action="append", required=True,
                   help="dataset name (owt, pile, pile-filtered) or local path; repeatable")
    add_common_args(o, n_default=1000, seq_len_default=512, batch_default=4, precision_default="fp32")
    o.add_argument("--bins", type=int, default=15, help="reliability-diagram bins (default: %(default)s)")
    o.add_argument("--top-k", type=int, default=3,
                   help="confidence neurons to mean-ablate in each model with LN (0: no ablation; default: 3)")
    o.add_argument("--csv", metavar="PATH", help="write the per-model summary as CSV")
    o.set_defaults(func=_overconfidence)


def _fail(e: BaseException) -> int:
    print(f"error: {e}", file=sys.stderr)
    return 2


def _pair(args, results: dict) -> tuple[str, str] | None:
    """(vanilla spec, LN-free spec) of the improvement score, or None when it is not defined."""
    if args.vanilla and args.ln_free:
        return args.vanilla, args.ln_free
    with_ln = [s for s, r in results.items() if not r.ln_free]
    free = [s for s, r in results.items() if r.ln_free]
    return (with_ln[-1], free[0]) if len(free) == 1 and with_ln else None


def _ioi(args) -> int:
    # local: analysis.cached_experiments loads torch + transformers (~5.8 s, measured); --help needs neither
    from ..analysis.cached_experiments import ioi_eval
    from ..analysis.patching import improvement_score

    if args.n < 1 or args.batch_size < 1 or args.rows_per_forward < 1:
        return _fail(UsageError("--n, --batch-size and --rows-per-forward must be >= 1"))
    if bool(args.vanilla) != bool(args.ln_free):
        return _fail(UsageError("give both --vanilla and --ln-free (or neither)"))
    try:
        check_output_paths(args.csv)
    except UsageError as e:
        return _fail(e)
    specs = list(dict.fromkeys([*args.model, *(s for s in (args.vanilla, args.ln_free) if s)]))
    opts = {"cache_dir": None if args.no_cache else args.cache_dir, "device": args.device,
            "precision": args.precision, "refresh": args.refresh, "batch_size": args.batch_size,
            "rows_per_forward": args.rows_per_forward}
    try:
        results = {}
        for spec in specs:
            progress = None if args.quiet or not sys.stderr.isatty() else run_kwargs(args, spec)["progress"]
            results[spec] = ioi_eval(spec, n=args.n, seed=args.seed, progress=progress, **opts)
        pair = _pair(args, results)
        imp = improvement_score(results[pair[0]].patching, results[pair[1]].patching) if pair else None
    except (*user_errors(), ValueError) as e:
        return _fail(e)
    if args.csv:
        with open(args.csv, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["model", "label", "ln_free", "layer", "position", "position_label", "activation",
                        "attribution", "error"])
            for spec, r in results.items():
                p = r.patching
                act, attr, err = p.normalised("act"), p.normalised("attr"), p.error
                for l in range(act.shape[0]):
                    for t in range(act.shape[1]):
                        w.writerow([spec, r.label, int(r.ln_free), l, t, r.labels[t], repr(float(act[l, t])),
                                    repr(float(attr[l, t])), repr(float(err[l, t]))])
    if args.json:
        for r in results.values():
            print_json(r.to_json())
        if imp is not None:
            print_json({"improvement": {"vanilla": pair[0], "ln_free": pair[1], **imp}})
        return 0
    for spec, r in results.items():
        p = r.patching
        secs = r.entry.meta["seconds"]
        print(f"{r.label} ({'LN-free' if r.ln_free else 'with LN'}), {p.act.shape[0]} IOI prompts of "
              f"{p.act.shape[2]} tokens: mean logit diff clean {p.ld_clean.mean():+.4f}, corrupted "
              f"{p.ld_corrupt.mean():+.4f}")
        print(f"  time: clean {secs['clean']:.2f} s, attribution {secs['attribution']:.2f} s, "
              f"activation patching {secs['activation']:.2f} s ({p.act.shape[1]} layers x {p.act.shape[2]} positions)")
        act, attr = p.normalised("act"), p.normalised("attr")
        print("  layer  max |act|  max |attr|  sum_t |attr - act|")
        for l, e in enumerate(p.layer_abs_error()):
            print(f"  {l:5d}  {abs(act[l]).max():9.4f}  {abs(attr[l]).max():10.4f}  {e:18.4f}")
    if imp is not None:
        print(f"improvement score (vanilla {results[pair[0]].label} minus LN-free {results[pair[1]].label}, per "
              f"layer): mean {imp['mean']:+.4f}, std {imp['std']:.4f} (paper, GPT-2 Small: -0.026, 0.082)")
    return 0


def _overconfidence(args) -> int:
    # local: analysis.cached loads torch + transformers (~5.8 s, measured); --help needs neither
    from ..analysis.cached import confidence_eval
    from ..analysis.cached_experiments import ablation_gap, overconfidence_eval

    if args.bins < 1 or args.top_k < 0:
        return _fail(UsageError("--bins must be >= 1 and --top-k >= 0"))
    rows = []
    try:
        check_data_args(args)
        check_output_paths(args.csv)
        fit_args_seq_len(args, list(args.model))  # the default follows the models' context
        for ds in args.dataset:
            data = data_spec(args, ds)
            per = {}
            for spec in args.model:
                res = overconfidence_eval(spec, data, **run_kwargs(args, f"{spec} on {ds}"))
                out = {**res.to_json(args.bins), "dataset": ds}
                if args.top_k and not res.ln_free:
                    kw = run_kwargs(args, f"{spec} ablation")  # same precision: entropies comparable
                    out["ablation"] = confidence_eval(spec, data, top_k=args.top_k, **kw).entry.meta["ablation"]
                per[spec] = out
            for spec, out in per.items():
                if "ablation" in out:
                    out["vs_ln_free"] = {o: ablation_gap(out["ablation"], per[o]) for o in per if per[o]["ln_free"]}
            rows.extend(per.values())
    except user_errors() as e:
        return _fail(e)
    if args.csv:
        keys = ["model", "label", "ln_free", "dataset", "n_sequences", "tokens", "mean_ce", "mean_entropy", "gap",
                "mean_confidence", "accuracy", "ece", "ablated_k", "ablated_ce", "ablated_entropy"]
        with open(args.csv, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(keys)
            for r in rows:
                cum = (r.get("ablation") or {}).get("cumulative") or [{}]
                extra = {"ablated_k": len(cum[-1].get("neurons", [])) or "", "ablated_ce": cum[-1].get("ce", ""),
                         "ablated_entropy": cum[-1].get("entropy", "")}
                w.writerow([{**r, **extra}.get(k, "") for k in keys])
    if args.json:
        for r in rows:
            print_json(r)
        return 0
    for r in rows:
        print(f"{r['label']} on {r['dataset']} ({'LN-free' if r['ln_free'] else 'with LN'}, {r['tokens']} tokens): "
              f"mean CE {r['mean_ce']:.4f}, mean entropy {r['mean_entropy']:.4f}, CE - entropy {r['gap']:+.4f}; "
              f"top-token confidence {r['mean_confidence']:.4f}, accuracy {r['accuracy']:.4f}, "
              f"ECE {r['ece']:.4f} ({args.bins} bins)")
        if "ablation" in r:
            cum = r["ablation"]["cumulative"][-1]
            print(f"  top-{len(cum['neurons'])} confidence neurons {cum['neurons']} mean-ablated: entropy "
                  f"{cum['entropy']:.4f}, CE {cum['ce']:.4f}")
            for o, g in r["vs_ln_free"].items():
                print(f"  LN-free {o}: entropy {g['ln_free_entropy']:.4f} ({g['entropy_gap']:+.4f}), CE "
                      f"{g['ln_free_ce']:.4f} ({g['ce_gap']:+.4f}) vs the ablated model")
    return 0
