"""`analyze <name>`: the paper's analyses of one model on one dataset, cached (see lnfree_core.analysis).

    analyze outliers     high-loss sequences, per-token losses, first token with CE > threshold (app. E.1)
    analyze first-token  first-position residual norms and attention sink rate (section 5.3)
    analyze confidence   confidence neurons of the last MLP layer: scores, ablations, W_U SVD (app. H)
    analyze dla          DLA vs direct effect per attention head: NMAE (section 5.1, app. G)
    analyze ioi          activation vs attribution patching on IOI (section 5.2; analyze_experiments.py)
    analyze overconfidence  entropy vs CE, reliability, ECE, confidence-neuron ablation (5.4, 6.1)

Every command takes --model (repeatable: each model is analysed in turn) and --dataset (plus --n, --seq-len, --split, --device, --cache-dir, ...)
and prints text, or one JSON object with --json.
"""

from __future__ import annotations

import argparse
import sys

from ..analysis.outliers import (compare_token_losses, first_exceeding, format_report, rank_sequences,
                                 sequences_exceeding, token_losses)
from .analyze_experiments import register_experiments
from .eval import add_common_args, check_data_args, data_spec, fit_args_seq_len, print_json, run_kwargs, user_errors


def register(sub) -> None:
    p = sub.add_parser("analyze", help="interpretability analyses (outliers, first-token, confidence, dla, ioi, overconfidence)",
                       description=__doc__.split("\n\n")[0])
    s = p.add_subparsers(dest="analysis", metavar="ANALYSIS")
    s.required = True

    def common(q, *, n, seq_len, batch, precision):
        q.add_argument("--model", action="append", required=True,
                       help="model spec (Hub id, HF folder, run dir, checkpoint, demo:NAME); repeatable: each "
                            "model is analysed in turn (with --json, one object per line)")
        q.add_argument("--dataset", required=True, help="dataset name (owt, pile, pile-filtered) or local path")
        add_common_args(q, n_default=n, seq_len_default=seq_len, batch_default=batch, precision_default=precision)

    o = s.add_parser("outliers", help="high-loss sequences and per-token losses (appendix E.1)")
    common(o, n=None, seq_len=1024, batch=8, precision="auto")
    o.add_argument("--by", choices=["mean", "max"], default="mean", help="rank by mean or max token CE")
    o.add_argument("--top", type=int, default=10, help="how many sequences to list (default: %(default)s)")
    o.add_argument("--threshold", type=float, default=50.0, help="CE threshold in nats (default: %(default)s)")
    o.add_argument("--context", type=int, default=5, help="tokens shown before the first exceedance")
    o.add_argument("--sequence", type=int, help="show this sequence token by token")
    o.add_argument("--compare", metavar="MODEL", help="a second model: per-token losses side by side")
    o.set_defaults(func=_outliers)

    f = s.add_parser("first-token", help="first-position residual norms and attention sinks (section 5.3)")
    common(f, n=1000, seq_len=512, batch=4, precision="fp32")
    f.add_argument("--sink-threshold", type=float, default=0.3,
                   help="the first token draws more than this share of a query's attention (default: 0.3; "
                        "one of 0.05, 0.10, .., 0.95)")
    f.add_argument("--sink-definition", choices=["query", "head-mean"], default="query",
                   help="query: every (layer, head, query) triple counts, query 0 included (the paper's number; "
                        "default); head-mean: a head's attention to position 0 averaged over queries > 0, then >= tau")
    f.add_argument("--ci", choices=["batches", "bootstrap"], default=None, dest="ci_method",
                   help="batches: 2.5-97.5 percentile spread of the rate over batches of 8 sequences (the paper's "
                        "CI; default for query); bootstrap: interval of the mean over sequences")
    f.add_argument("--norm", choices=["centred", "raw"], default="centred",
                   help="centred: ||x - mean(x)|| (the paper's weight-centred models; default); raw: ||x||")
    f.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples for the CI")
    f.set_defaults(func=_first_token)

    c = s.add_parser("confidence", help="confidence neurons of the last MLP layer (appendix H)")
    common(c, n=1000, seq_len=512, batch=4, precision="fp32")
    c.add_argument("--top-k", type=int, default=3, help="neurons to ablate (default: %(default)s)")
    c.add_argument("--no-fold-ln", action="store_true", help="do not fold the final norm's gain into W_U")
    c.add_argument("--no-center", action="store_true", help="do not center w_out and W_U")
    c.add_argument("--neurons", type=_ints, metavar="I,J,..",
                   help="ablate these last-layer neurons instead of the model's own top-k (the paper ablates the "
                        "same neurons in every variant, e.g. 584,2123,2870 in GPT-2 Small)")
    c.add_argument("--neurons-from", metavar="MODEL",
                   help="ablate the top-k neurons of this model (e.g. the original model of a comparison)")
    c.set_defaults(func=_confidence)

    d = s.add_parser("dla", help="DLA vs direct effect per attention head: NMAE (section 5.1, appendix G)")
    common(d, n=1000, seq_len=512, batch=4, precision="fp32")
    d.add_argument("--granularity", choices=["sequence", "token"], default="sequence",
                   help="eq. 9 over per-sequence means (paper) or over all tokens (default: %(default)s)")
    d.add_argument("--positions", choices=["all", "last"], default="all",
                   help="all predicting positions (default) or the last one of each sequence only")
    d.add_argument("--pooling", choices=["mean", "pooled"], default="mean",
                   help="mean of per-head NMAE (eq. 10; default) or one ratio pooled over all heads")
    d.add_argument("--center-unembed", action="store_true", help="DLA and DE with a centred W_U (logit minus mean logit)")
    d.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples for the CI")
    d.set_defaults(func=_dla)

    register_experiments(s)  # ioi, overconfidence


def _ints(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated neuron indices like 584,2123,2870, got {text!r}") from None


def _guard(fn):
    """Run `fn` once per --model (after fitting --seq-len to every model, before any work); a user error
    is a message and exit code 2."""
    def run(args) -> int:
        try:
            check_data_args(args)
            specs = list(args.model)
            fit_args_seq_len(args, specs + ([args.compare] if getattr(args, "compare", None) else []))
            rc = 0
            for i, spec in enumerate(specs):
                if i and not args.json:
                    print()
                rc = max(rc, fn(argparse.Namespace(**{**vars(args), "model": spec})))
            return rc
        except user_errors() as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    return run


def _evaluate(args, evaluate, to_json, **options) -> dict | None:
    """`evaluate` (a cached entry point of lnfree_core.analysis.cached) of --model on --dataset, as the
    dict `to_json(result)`; with --json it is printed and None returned (the command is done)."""
    res = evaluate(args.model, data_spec(args, args.dataset), **options, **run_kwargs(args, args.model))
    out = to_json(res)
    if args.json:
        print_json(out)
        return None
    return out


@_guard
def _outliers(args) -> int:
    # local: analysis.cached loads torch + transformers (~5.8 s, measured); --help needs neither
    from ..analysis.cached import ce_eval
    from ..model_tokenizer import model_decoder

    res = ce_eval(args.model, data_spec(args, args.dataset), **run_kwargs(args, f"{args.model} on {args.dataset}"))
    losses, toks = res.losses, res.tokens
    ranked = rank_sequences(losses, args.by, args.top)
    exceeding = sequences_exceeding(losses, args.threshold)
    out: dict = {"model": args.model, "label": res.label, "dataset": args.dataset, "by": args.by,
                 "threshold": args.threshold, "n_sequences": int(losses.shape[0]),
                 "seq_len": int(args.seq_len),
                 "ranked": [r.to_dict() for r in ranked], "exceeding": [int(i) for i in exceeding]}
    decode = None
    if args.sequence is not None or args.compare:
        decode = model_decoder(args.model)  # the model family's tokenizer (GPT-2's for GPT-2 models)
    if args.sequence is not None:
        i = args.sequence
        if not 0 <= i < losses.shape[0]:
            print(f"error: --sequence {i} is out of range (0..{losses.shape[0] - 1})", file=sys.stderr)
            return 2
        ex = first_exceeding(toks[i], losses[i], decode, args.threshold, args.context)
        out["sequence"] = {"index": i, "first_exceeding": None if ex is None else ex.to_dict(),
                           "tokens": [r.to_dict() for r in token_losses(toks[i], losses[i], decode)]}
        if args.compare:
            other = ce_eval(args.compare, data_spec(args, args.dataset), **run_kwargs(args, f"{args.compare}"))
            rows = compare_token_losses(toks[i], losses[i], other.losses[i], decode)
            out["compare"] = {"model": args.compare, "label": other.label, "tokens": [r.to_dict() for r in rows]}
    if args.json:
        print_json(out)
        return 0
    print(f"{res.label} on {args.dataset} ({losses.shape[0]} sequences of {args.seq_len} tokens): "
          f"{len(exceeding)} of {losses.shape[0]} sequences have a token with CE > {args.threshold:g}")
    print(f"top {len(ranked)} by {args.by} token CE:  index  mean  max  (position of max)")
    for r in ranked:
        print(f"  {r.index:6d}  {r.mean:10.4f}  {r.max:10.4f}  ({r.argmax_position})")
    if args.sequence is not None:
        print()
        print(format_report(args.sequence, losses.shape[0], toks[args.sequence], losses[args.sequence], decode,
                            args.threshold, args.context), end="")
        if args.compare:
            print(f"\nposition  token  {res.label}  {out['compare']['label']}  diff")
            for r in out["compare"]["tokens"]:
                if r["loss_a"] is not None:
                    print(f"  {r['position']:5d}  {r['escaped']!s:>12}  {r['loss_a']:10.4f}  {r['loss_b']:10.4f}  "
                          f"{r['diff']:+10.4f}")
    return 0


@_guard
def _first_token(args) -> int:
    # local: analysis.cached loads torch + transformers (~5.8 s, measured); --help needs neither
    from ..analysis.cached import first_token_eval
    from ..analysis.first_token import SINK_THRESHOLDS

    if round(args.sink_threshold, 6) not in SINK_THRESHOLDS:
        print(f"error: --sink-threshold {args.sink_threshold:g} is not one of the counted thresholds "
              f"{', '.join(f'{t:g}' for t in SINK_THRESHOLDS)}", file=sys.stderr)
        return 2
    out = _evaluate(args, first_token_eval, lambda res: res.to_json(
        args.sink_threshold, n_boot=args.n_boot, norm=args.norm, definition=args.sink_definition,
        ci_method=args.ci_method))
    if out is None:
        return 0
    prof, sk = out["norms"], out["sinks"]
    print(f"{out['label']} on {args.dataset} ({out['n_sequences']} sequences of {args.seq_len} tokens), {prof['norm']} norms")
    print("residual point      first-token norm   other tokens (mean)   ratio")
    for name, f, r, q in zip(prof["points"], prof["first"], prof["rest"], prof["ratio"]):
        print(f"  {name:16s}  {f:16.2f}  {r:20.2f}  {q:7.2f}")
    what = ("share of (layer, head, query) triples with attention to the first token"
            if sk["definition"] == "query" else "share of heads whose mean attention to the first token (queries > 0) is")
    op = ">" if sk["definition"] == "query" else ">="
    print(f"attention sink rate ({what} {op} {sk['threshold']:g}): {100 * sk['rate']:.1f}% "
          f"[{100 * sk['ci'][0]:.1f}%, {100 * sk['ci'][1]:.1f}%] ({sk['ci_label']})")
    if sk["uniform"] is not None:
        print(f"  uniform attention over the earlier positions (no preference for the first token) would score "
              f"{100 * sk['uniform']:.1f}% on these sequences")
    return 0


@_guard
def _confidence(args) -> int:
    # local: analysis.cached loads torch + transformers (~5.8 s, measured); --help needs neither
    from ..analysis.cached import confidence_eval

    neurons = args.neurons
    if args.neurons_from:
        if neurons:
            print("error: give --neurons or --neurons-from, not both", file=sys.stderr)
            return 2
        first = confidence_eval(args.neurons_from, data_spec(args, args.dataset), top_k=args.top_k,
                                fold_ln=not args.no_fold_ln, center=not args.no_center,
                                **run_kwargs(args, args.neurons_from))
        neurons = first.top
    try:
        out = _evaluate(args, confidence_eval, lambda res: res.to_json(), top_k=args.top_k,
                        fold_ln=not args.no_fold_ln, center=not args.no_center, neurons=neurons)
    except ValueError as e:  # neurons that the model's last layer does not have
        print(f"error: {e}", file=sys.stderr)
        return 2
    if out is None:
        return 0
    ab = out["ablation"]
    print(f"{out['label']} on {args.dataset}: confidence neurons of layer {out['layer']}; ablated {out['ablated']}")
    print("  neuron    CN score      ||w_out||   LogitVar")
    for t in out["top"]:
        print(f"  {t['neuron']:6d}  {t['score']:10.4g}  {t['norm']:10.4g}  {t['logit_var']:10.4g}")
    print(f"baseline: CE {ab['baseline']['ce']:.4f}, entropy {ab['baseline']['entropy']:.4f}")
    for r in ab["single"]:
        print(f"  ablate {r['neuron']}: dCE {r['delta_ce']:+.5f} ({100 * r['rel_ce']:+.3f}%), "
              f"dH {r['delta_entropy']:+.5f} ({100 * r['rel_entropy']:+.3f}%)")
    for r in ab["cumulative"]:
        print(f"  ablate {r['neurons']}: dCE {r['delta_ce']:+.5f} ({100 * r['rel_ce']:+.3f}%), "
              f"dH {r['delta_entropy']:+.5f} ({100 * r['rel_entropy']:+.3f}%)")
    box = ab.get("abs_delta_ce")
    if box:
        print(f"  per-token |dCE| with all {len(out['ablated'])} ablated: mean {box['mean']:.5f}, median "
              f"{box['median']:.5f}, quartiles [{box['q1']:.5f}, {box['q3']:.5f}], max {box['max']:.4f}")
    return 0


@_guard
def _dla(args) -> int:
    # local: analysis.cached loads torch + transformers (~5.8 s, measured); --help needs neither
    from ..analysis.cached import dla_eval

    out = _evaluate(args, dla_eval, lambda res: res.to_json(args.granularity, n_boot=args.n_boot,
                                                            positions=args.positions, pooling=args.pooling),
                    center_unembed=args.center_unembed)
    if out is None:
        return 0
    nm = out["nmae"]
    print(f"{out['label']} on {args.dataset}: NMAE(DLA, DE) = {nm['overall']:.2f}% "
          f"[{nm['ci'][0]:.2f}%, {nm['ci'][1]:.2f}%] (95% bootstrap CI; {nm['granularity']} granularity, "
          f"{nm['positions']} positions, {'mean of per-head NMAE' if nm['pooling'] == 'mean' else 'pooled over heads'}"
          f"{', centred W_U' if out['center_unembed'] else ''})")
    for l, row in enumerate(nm["per_head"]):
        print(f"  layer {l:2d}: " + " ".join(f"{v:7.2f}" for v in row))
    return 0
