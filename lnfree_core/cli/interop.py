"""`interop sigma SPEC` and `interop check SPEC`: an LN-free model's sigma_bar, and its folded form checked."""

from __future__ import annotations

import importlib.util
import sys


def register(sub) -> None:
    p = sub.add_parser("interop", help="LN-free models in interpretability tools: sigma_bar per block, folded-form check")
    isub = p.add_subparsers(dest="interop_command", metavar="SUBCOMMAND")
    isub.required = True
    s = isub.add_parser("sigma", help="every LN block's frozen sigma_bar and where it came from")
    s.add_argument("spec", metavar="MODEL", help="run directory (RUN@STEP), checkpoint, export folder or Hub id")
    s.set_defaults(func=_sigma)
    c = isub.add_parser("check", help="fold the model (no normalisation) and compare its logits in transformers, "
                                      "TransformerLens and nnsight (the tools that are installed)")
    c.add_argument("spec", metavar="MODEL", help="run directory (RUN@STEP), checkpoint, export folder or Hub id")
    c.add_argument("--seq-len", type=int, default=32, help="tokens per random test sequence (default 32)")
    c.set_defaults(func=_check)


def _load(spec):
    # local: lnfree_core.models loads torch + transformers (~5.8 s, measured); --help needs neither
    from ..models import load_model

    try:
        return load_model(spec)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return None


def _sigma(args) -> int:
    loaded = _load(args.spec)
    if loaded is None:
        return 2
    sig = loaded.info.get("sigma_bar") or {}
    if not sig:
        print(f"{args.spec}: no removed LN block (LayerNorms live)")
        return 0
    print(f"sigma_bar source: {loaded.info.get('sigma_source', 'unknown')}")
    recorded = loaded.info.get("recorded_sigma_bar") or {}
    if recorded:
        print(f"{'block':>8}  {'loaded':>10}  {'recorded':>10}")
    for name, value in sig.items():
        print(f"{name:>8}  {value:>10.6g}" + (f"  {recorded[name]:>10.6g}" if name in recorded else "") if recorded
              else f"{name:>8}  {value:.6g}")
    return 0


def _check(args) -> int:
    # local: torch alone costs ~2.1 s (measured), interop loads transformers too; --help needs neither
    import torch
    from ..interop import bridge_from_folded, fold_model, nnsight_from_folded
    from ..interop.folded import tokenizer_for

    loaded = _load(args.spec)
    if loaded is None:
        return 2
    if not loaded.ln_free:
        print(f"error: {args.spec} is not LN-free; there is nothing to fold", file=sys.stderr)
        return 2
    model = loaded.model
    if model.config.model_type != "gpt2":
        print(f"error: {args.spec} is a {model.config.model_type} model; folding the normalisation away (and the "
              "TransformerLens / nnsight loaders) are implemented for GPT-2 only", file=sys.stderr)
        return 2
    seq = max(2, min(args.seq_len, int(getattr(model.config, "n_positions", args.seq_len))))
    x = torch.randint(0, int(model.config.vocab_size), (2, seq), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = model(x).logits
        folded = fold_model(model)
        print(f"transformers (folded, no LayerNorm): max |logit diff| = {(folded(x).logits - ref).abs().max():.2e}")
    tok = tokenizer_for(args.spec, "hub" if loaded.source == "hub" else "folder" if loaded.source == "folder" else "run")
    if importlib.util.find_spec("transformer_lens"):
        bridge = bridge_from_folded(fold_model(model), tok)
        with torch.no_grad():
            print(f"TransformerLens bridge (normalization_type {bridge.cfg.normalization_type}): "
                  f"max |logit diff| = {(bridge(x) - ref).abs().max():.2e}")
    else:
        print("TransformerLens: not installed (pip install -r requirements-interop.txt)")
    if importlib.util.find_spec("nnsight"):
        lm = nnsight_from_folded(fold_model(model), tok)
        with lm.trace(x):
            out = lm.lm_head.output.save()
        print(f"nnsight: max |logit diff| = {(out - ref).abs().max():.2e}")
    else:
        print("nnsight: not installed (pip install -r requirements-interop.txt)")
    return 0
