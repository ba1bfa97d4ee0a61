"""`demo build | status | findings`: build the offline demo suite, say what of it is built, and measure
the paper's findings (attention sinks, first-token norms, confidence neurons) on its models."""

from __future__ import annotations

import json
import os
import signal
import sys
import time

from lnfree_core.config import ConfigError
from lnfree_core.demo import demo_status, format_status, get_size
from lnfree_core.demo.status import ce_table

from .parsers import command_group


def register(sub) -> None:
    """Add the ``demo`` command (``build``, ``status``) to the CLI's subparsers."""
    dsub = command_group(sub, "demo",
                         help="the offline demo suite: small models and datasets built from the Python stdlib",
                         description="The demo suite: datasets (owt-demo, pile-demo, pile-filtered-demo) and models "
                                     "(demo:original, demo:vanilla, demo:ln-free) built locally with no download.",
                         dest="demo_command")

    b = dsub.add_parser("build", help="build (or finish) the demo suite; finished stages are reused",
                        description="Build the demo suite. Each stage is reused when already built and redone when "
                                    "half-built. --size full (default) takes a few minutes on a 2-core CPU; tiny "
                                    "takes seconds (for tests; no quality promised).")
    b.add_argument("--out", metavar="DIR", default=None, help="demo root (default ./lnfree_home/demo)")
    b.add_argument("--size", choices=["full", "findings", "tiny"], default="full",
                   help="full (default): pretrains its own small original; findings: fine-tunes the shipped, longer-pretrained "
                        "original that shows the first-token norm finding (lnfree_core.demo.sizes); tiny: for tests")
    b.add_argument("--threads", type=int, default=None, metavar="N",
                   help="torch CPU threads (default: all cores if idle at the start, else 1)")
    b.add_argument("--json", action="store_true", help="print the summary as JSON at the end")
    b.set_defaults(func=_build)

    s = dsub.add_parser("status", help="what of the demo suite is built, where, and its numbers")
    s.add_argument("--out", metavar="DIR", default=None, help="demo root (default ./lnfree_home/demo)")
    s.add_argument("--json", action="store_true", help="print JSON")
    s.set_defaults(func=_status)

    f = dsub.add_parser("findings", help="attention sinks, first-token norms and confidence neurons of the demo models",
                        description="Measure the paper's findings (section 5.3, appendix H) on the built demo models, "
                                    "on the first sequences of pile-filtered-demo (lnfree_core.demo.findings).")
    f.add_argument("--out", metavar="DIR", default=None, help="demo root (default ./lnfree_home/demo)")
    f.add_argument("--sequences", type=int, default=32, metavar="N", help="sequences measured (default 32)")
    f.add_argument("--json", action="store_true", help="print JSON")
    f.set_defaults(func=_findings)

    o = dsub.add_parser("pretrain-original", help="pretrain the demo's shipped original again (about an hour on 2 cores)",
                        description="Rebuild lnfree_core/demo/original (lnfree_core.demo.original): make the demo "
                                    "datasets and the seeded initial model in a work folder, pretrain with lnfree's "
                                    "trainer and the findings size's recipe, and write config.json, model.safetensors "
                                    "and recipe.json (settings, data SHA-256, training numbers) to --out. Stages "
                                    "already finished in the work folder are reused.")
    o.add_argument("--out", metavar="DIR", required=True,
                   help="folder to write (lnfree_core/demo/original replaces the shipped one)")
    o.add_argument("--work", metavar="DIR", default=None,
                   help="demo root for the datasets and the run (default ./lnfree_home/demo-original-work)")
    o.add_argument("--threads", type=int, default=None, metavar="N",
                   help="torch CPU threads (default: all cores if idle at the start, else 1)")
    o.add_argument("--device", default="cpu", metavar="DEV",
                   help="where the pretraining runs: cpu (default, as the shipped original was made), cuda, cuda:N "
                        "or auto (CUDA when visible); float32 either way, and recipe.json records it")
    o.set_defaults(func=_pretrain_original)


class ProgressPrinter:
    """Prints one line per stage change, and within a stage at most every ``interval`` seconds.

    Lines end with the overall percentage (``... | overall 42%``), which the app's log parser reads.
    """

    def __init__(self, size, interval: float = 2.0, stream=None):
        from lnfree_core.demo.build import overall_fraction  # local: demo.build imports torch and transformers (~5.8 s CPU), which `--help` and `demo status` do not need

        self._overall = lambda stage, done, total: overall_fraction(size, stage, done, total)
        self.interval, self.stream = interval, stream or sys.stdout
        self._last_stage, self._last_time, self._t0 = None, 0.0, time.perf_counter()

    def __call__(self, stage: str, done: int, total: int) -> None:
        now = time.perf_counter()
        changed = stage != self._last_stage
        if not changed and done < total and now - self._last_time < self.interval:
            return
        self._last_stage, self._last_time = stage, now
        pct = 100 * self._overall(stage, done, total)
        print(f"[demo {now - self._t0:6.1f}s] {stage}: {done}/{total} | overall {pct:.0f}%",
              file=self.stream, flush=True)


def _build(args) -> int:
    from lnfree_core.demo.build import DemoBuildCancelled, DemoBuildError, build_demo  # local: demo.build imports torch and transformers (~5.8 s CPU), which `--help` and `demo status` do not need

    from transformers.utils import logging as hf_logging  # local: transformers costs ~1.4 s to import (-X importtime); only a build needs it

    hf_logging.disable_progress_bar()  # weight loading/saving bars would bury the progress lines
    hf_logging.set_verbosity_error()
    size = get_size(args.size)
    try:
        summary = build_demo(args.out, size, progress=ProgressPrinter(size), threads=args.threads)
    except DemoBuildCancelled as e:
        print(f"stopped: {e}", file=sys.stderr, flush=True)
        _die_by(e.signum)
        return 128 + int(e.signum)  # not reached: the process ends by the signal
    except (DemoBuildError, OSError, RuntimeError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(summary, indent=1))
        return 0
    q = summary["quality"]
    print(f"demo suite ({summary['size']}) at {summary['root']}: built in {summary['build_seconds']:.0f} s "
          f"(this run {summary['this_run_seconds']:.0f} s)")
    mc = summary["model_config"]
    print(f"  models: GPT-2 {mc['n_layer']} layers x {mc['n_embd']} wide, context {mc['seq_len']}, "
          f"{mc['parameters']:,} parameters, compact vocabulary of {mc['vocab_size']:,} GPT-2 tokens")
    f = summary["datasets"]["pile-filtered-demo"]
    print(f"  pile-filtered-demo: {f['removed_tokens']} tokens absent from the OWT-like train split; "
          f"{f['clean_sequences']} of {f['scanned_sequences']} Pile-like sequences free of them "
          f"(kept {f['kept_sequences']}); most frequent: {', '.join(f['top_removed'][:6])}")
    print(ce_table(summary["ce"]))
    print(f"  unigram entropy of the OWT-like train split: {q['unigram_entropy']:.4f} nats")
    for ok, text in zip((q["original_far_below_unigram"], q["ln_free_close_to_vanilla"]), q["statements"]):
        print(f"  [{'ok' if ok else 'NOT MET'}] {text}")
    for name, m in summary["models"].items():
        print(f"  {m['spec']:<14} {m['path']}")
    return 0


def _pretrain_original(args) -> int:
    from lnfree_core.demo.build import DemoBuildCancelled, DemoBuildError, rebuild_original  # local: demo.build imports torch and transformers (~5.8 s CPU), which `--help` and `demo status` do not need
    from lnfree_core.train_setup import pick_device  # local: imports torch, as above

    if args.threads is not None and args.threads < 1:
        print(f"error: --threads must be at least 1, got {args.threads}", file=sys.stderr)
        return 2
    out = os.path.abspath(args.out)
    if os.path.exists(out) and not os.path.isdir(out):
        print(f"error: --out {out} is a file; give a folder", file=sys.stderr)
        return 2
    try:
        device = str(pick_device(args.device, 0, 1))
    except ConfigError as e:
        print(f"error: --device: {e}", file=sys.stderr)
        return 2
    size = get_size("findings")
    try:
        recipe = rebuild_original(out, args.work, size, progress=ProgressPrinter(size), threads=args.threads,
                                  device=device)
    except DemoBuildCancelled as e:
        print(f"stopped: {e}", file=sys.stderr, flush=True)
        _die_by(e.signum)
        return 128 + int(e.signum)
    except (DemoBuildError, OSError, RuntimeError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    t = recipe["training"]
    print(f"pretrained original written to {out}: {t['steps']} steps, final training loss "
          f"{t['final_train_loss']:.3f}, weights sha256 {recipe['weights_sha256'][:16]}")
    return 0


def _die_by(signum: int) -> None:
    """End the process by ``signum`` with its default action, so that the parent sees "killed by signal"
    (the app tells a stopped build from a failed one by that), as after an uncaught signal."""
    sys.stdout.flush()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def _status(args) -> int:
    st = demo_status(args.out)
    print(json.dumps(st, indent=1) if args.json else format_status(st))
    return 0


def _findings(args) -> int:
    from lnfree_core.demo.findings import demo_findings, format_findings  # local: demo.findings imports torch and transformers (~5.8 s CPU), which `--help` and `demo status` do not need

    if args.sequences < 1:
        print(f"error: --sequences must be at least 1, got {args.sequences}", file=sys.stderr)
        return 2
    try:
        found = demo_findings(args.out, args.sequences)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(found, indent=1) if args.json else format_findings(found))
    return 0
