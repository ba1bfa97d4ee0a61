"""`train`: fine-tune with LN removal (or the vanilla control); also under torchrun."""

from __future__ import annotations

import argparse
import sys

from ..config import HPARAM_OVERRIDES, RESUME_PLACEHOLDER, ConfigError, TrainConfig


def register(sub) -> None:
    p = sub.add_parser("train", help="fine-tune a model: LN removal (FakeLN schedule) or vanilla control",
                       description="Fine-tune a model. Several GPUs: torchrun --nproc_per_node N -m lnfree_core train ...")
    p.add_argument("--config", help="YAML config file (TrainConfig keys); flags given here override it")
    p.add_argument("--model", help="Hub id, local HF folder, run directory, or demo:NAME")
    p.add_argument("--dataset", help="dataset name (owt, pile, pile-filtered) or local path")
    p.add_argument("--schedule", help="preset (gpt2, gpt2-medium, gpt2-large, gpt2-xl, pythia-70m), 'auto', or a schedule file")
    p.add_argument("--mode", choices=["ln-free", "vanilla"])
    p.add_argument("--out", help="run directory (never overwritten; use --resume to continue one)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its newest good checkpoint, as configured in its config.yaml; "
                        "only --device, --save-every, --compile, --grad-checkpointing, --distributed may change")
    p.add_argument("--device", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"])
    p.add_argument("--seed", type=int)
    p.add_argument("--save-every", type=int, help="checkpoint every K optimizer steps")
    p.add_argument("--compile", action="store_true", default=None, help="torch.compile each block")
    p.add_argument("--attn-implementation", choices=["sdpa", "eager"])
    p.add_argument("--shuffle", action="store_true", default=None)
    p.add_argument("--dropout", type=float, help="training dropout for every dropout layer (default: the model's config)")
    p.add_argument("--distributed", choices=["ddp", "fsdp"],
                   help="under torchrun: DDP (default) or FSDP (shards weights, gradients and AdamW states)")
    p.add_argument("--log-every", type=int, help="read the step's values on the host every K steps (default 1; "
                   "10 lets a GPU run ahead; every step still gets its metrics row)")
    p.add_argument("--max-steps", type=int)
    p.add_argument("--batch-size", type=int, dest="micro_batch_size", help="micro batch size (sequences)")
    p.add_argument("--grad-accum", type=int, dest="grad_accum_steps")
    p.add_argument("--seq-len", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--min-lr", type=float)
    p.add_argument("--warmup-steps", type=int)
    p.add_argument("--aux-weight", type=float)
    p.add_argument("--sigma-ema", type=float, help="EMA factor of sigma_avg (0 or absent in the schedule: last step's value)")
    p.add_argument("--sigma-ema-tokens", type=_ema_unit, metavar="N|step",
                   help="the EMA factor applies per N tokens through each block (independent of batch and GPU "
                        "count), or 'step': once per optimizer step (the presets use per-kind token counts)")
    p.add_argument("--adam-betas", type=_betas, metavar="B1,B2", help="AdamW betas (presets: 0.9,0.999)")
    p.add_argument("--mask-eot-labels", action=argparse.BooleanOptionalAction, default=None,
                   help="leave end-of-text targets out of the training CE (presets: yes, as the reference runs)")
    p.add_argument("--decay-fakeln-gain", action=argparse.BooleanOptionalAction, default=None,
                   dest="weight_decay_fakeln_gain",
                   help="apply weight decay to FakeLN gamma too (presets: yes, as the reference runs; default: no)")
    p.add_argument("--keep-steps", type=_steps, metavar="S1,S2,..",
                   help="also checkpoint at these steps and never rotate them away (presets: the release step)")
    p.add_argument("--grad-checkpointing", action="store_true", default=None)
    p.set_defaults(func=_run)


def _ema_unit(text: str):
    if text == "step":
        return "step"
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a token count or 'step', got {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"token count must be >= 1, got {n}")
    return n


def _betas(text: str) -> list[float]:
    try:
        b = [float(x) for x in text.split(",")]
    except ValueError:
        b = []
    if len(b) != 2 or not all(0 <= x < 1 for x in b):
        raise argparse.ArgumentTypeError(f"expected two numbers in [0, 1) like 0.9,0.999, got {text!r}")
    return b


def _steps(text: str) -> list[int]:
    try:
        steps = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated step numbers like 300,600, got {text!r}") from None
    if any(s < 1 for s in steps):
        raise argparse.ArgumentTypeError(f"steps must be >= 1, got {text!r}")
    return steps


def _given(args) -> dict:
    """The settings given as flags on this command line (not from --config), by TrainConfig/HParams key."""
    given = {}
    for key in ("model", "dataset", "schedule", "mode", "device", "precision", "seed", "save_every",
                "compile", "attn_implementation", "shuffle", "distributed", "dropout", "log_every", *HPARAM_OVERRIDES):
        val = getattr(args, key, None)
        if val is not None:
            given[key] = val
    return given


def config_from_args(args) -> TrainConfig:
    """The TrainConfig of a command line: --config, then the flags on top.

    With --resume the saved config.yaml of the run wins (the trainer compares the flags given here
    with it); the config built here is used only when the run never got past start-up.
    """
    data = {}
    if args.config:
        data = TrainConfig.load(args.config).to_dict()
    given = _given(args)
    if getattr(args, "out", None) is not None:
        data["out"] = args.out
    overrides = dict(data.get("overrides") or {})
    for key, val in given.items():
        if key in HPARAM_OVERRIDES:
            overrides[key] = None if val == "step" else val  # sigma_ema_tokens 'step': the per-step EMA
        else:
            data[key] = val
    data["overrides"] = overrides
    if args.resume:
        if "out" not in data:
            raise ConfigError("--resume needs --out RUN_DIR")
        if "model" not in data:
            return TrainConfig(model=RESUME_PLACEHOLDER, out=data["out"])
        return TrainConfig.from_dict(data)
    missing = [k for k in ("model", "out") if k not in data]
    if missing:
        raise ConfigError(f"missing {', '.join('--' + m for m in missing)} (or a --config file that sets them)")
    return TrainConfig.from_dict(data)


def _run(args) -> int:
    # local: lnfree_core.train loads torch + transformers (~5.8 s via models.py, measured); --help needs neither
    from ..train import main_train

    try:
        cfg = config_from_args(args)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return main_train(cfg, resume=args.resume, resume_changes=_given(args) if args.resume else None)
