"""`schedule list|show|fit`: the paper's presets and fitted schedules."""

from __future__ import annotations

import json
import sys

from ..method.presets import preset, preset_names, resolve_schedule
from ..method.schedule import ScheduleError, ema_summary, fit_schedule


def register(sub) -> None:
    p = sub.add_parser("schedule", help="list, show and fit LN-removal schedules")
    s = p.add_subparsers(dest="schedule_cmd", metavar="SUBCOMMAND")
    s.required = True
    ls = s.add_parser("list", help="the paper's presets (Table 3)")
    ls.set_defaults(func=_list)
    sh = s.add_parser("show", help="a preset or schedule file: hyperparameters and removal events")
    sh.add_argument("name", metavar="NAME_OR_FILE", help="preset name, 'auto', or a .yaml/.json schedule file")
    sh.add_argument("--json", action="store_true", help="print the event list as JSON, sorted by step")
    sh.add_argument("--n-layers", type=int, help="layer count (for 'auto')")
    sh.add_argument("--max-steps", type=int, help="max steps (for 'auto')")
    sh.set_defaults(func=_show)
    fit = s.add_parser("fit", help="fit the paper's proportions to a layer count and step budget; write a file")
    fit.add_argument("--n-layers", type=int, required=True)
    fit.add_argument("--max-steps", type=int, required=True)
    fit.add_argument("--out", required=True, help="schedule file to write (.yaml or .json)")
    fit.set_defaults(func=_fit)


def _list(args) -> int:
    for name in preset_names():
        sc = preset(name)
        hp = sc.hparams
        print(f"{name:12s} {sc.n_layers:3d} layers  {hp.max_steps:5d} steps  {hp.tokens_per_step:7d} tokens/step  "
              f"lr {hp.lr:g}->{hp.min_lr:g}  starts {sc.starts}  gaps {sc.gaps}")
    print("auto         fits the paper's proportions to any layer count and step budget")
    return 0


def _show(args) -> int:
    try:
        sc = resolve_schedule(args.name, n_layers=args.n_layers, max_steps=args.max_steps).validate()
    except (ScheduleError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps([e.to_dict() for e in sc.events()]))
        return 0
    d = sc.to_dict()
    print(f"schedule {d['name']} for {d['n_layers']} layers (order {', '.join(d['order'])})")
    for k, v in d["hparams"].items():
        print(f"  {k}: {v}")
    print("  " + ema_summary(sc.hparams))
    for g in sc.order:
        evs = sc.group_events(g)
        print(f"  {g:>3}: " + ", ".join(f"{e.name}@{e.step}" for e in evs))
    return 0


def _fit(args) -> int:
    try:
        sc = fit_schedule(args.n_layers, args.max_steps).validate()
    except ScheduleError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    sc.save(args.out)
    print(f"wrote {args.out}: starts {sc.starts}, gaps {sc.gaps}")
    return 0
