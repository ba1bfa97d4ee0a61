"""`train`: fine-tune with LN removal (or the vanilla control); also under torchrun."""

from __future__ import annotations

import sys

from ..config import HPARAM_OVERRIDES, RESUME_PLACEHOLDER, ConfigError, TrainConfig


def register(sub) -> None:
    p = sub.add_parser("train", help="fine-tune a model: LN removal (FakeLN schedule) or vanilla control",
                       description="Fine-tune a model. Several GPUs: torchrun --nproc_per_node N -m lnfree_core train ...")
    p.add_argument("--config", help="YAML config file (TrainConfig keys); flags given here override it")
    p.add_argument("--model", help="Hub id, local HF folder, run directory, or demo:NAME")
    p.add_argument("--dataset", help="dataset name (owt, pile, pile-filtered) or local path")
    p.add_argument("--schedule", help="preset (gpt2, gpt2-medium, gpt2-large, gpt2-xl), 'auto', or a schedule file")
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
    p.add_argument("--max-steps", type=int)
    p.add_argument("--batch-size", type=int, dest="micro_batch_size", help="micro batch size (sequences)")
    p.add_argument("--grad-accum", type=int, dest="grad_accum_steps")
    p.add_argument("--seq-len", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--min-lr", type=float)
    p.add_argument("--warmup-steps", type=int)
    p.add_argument("--aux-weight", type=float)
    p.add_argument("--sigma-ema", type=float)
    p.add_argument("--grad-checkpointing", action="store_true", default=None)
    p.set_defaults(func=_run)


def _given(args) -> dict:
    """The settings given as flags on this command line (not from --config), by TrainConfig/HParams key."""
    given = {}
    for key in ("model", "dataset", "schedule", "mode", "device", "precision", "seed", "save_every",
                "compile", "attn_implementation", "shuffle", "distributed", "dropout", *HPARAM_OVERRIDES):
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
            overrides[key] = val
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
    from ..train import main_train

    try:
        cfg = config_from_args(args)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return main_train(cfg, resume=args.resume, resume_changes=_given(args) if args.resume else None)
