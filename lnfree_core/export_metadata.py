"""lnfree's metadata in an export folder (lnfree_metadata.json): where each frozen sigma_bar went.

A stock LN-free export stores each removed FakeLN block (x - mu) * gamma / sigma_bar + beta as a
LayerNorm with eps = 1e12 and weight gamma * sqrt(eps) / sigma_bar, and the value path's ratio
rho = sigma_qk / sigma_v inside c_attn (W_v * rho, b_v + (1 - rho) * beta @ W_v). From the weights
alone only gamma / sigma_bar is known. This JSON keeps what the weights lose:

    {"format": "lnfree-metadata", "version": 1, "lnfree_version": "0.1.0",
     "model_type": "gpt2", "base_model": "gpt2" | null (a Hub id, never a local path),
     "ln_free": true, "ln_eps": 1e-05 (the LayerNorms' own epsilon), "export_eps": 1e12,
     "schedule": {...} | null (the run's resolved schedule),
     "blocks": {"mlp.0": {"sigma_bar": 3.02, "removed": true, "params": "mlp.0",
                          "stock_module": "transformer.h.0.ln_2"}, "qk.0": {...}, "v.0": {..., "params": "qk.0"},
                ..., "f": {...}},
     "params": {"mlp.0": {"gamma": [...], "beta": [...]}, "qk.0": {...}, ..., "f": {...}},
               (gamma and beta before any scaling; LN_qk and LN_v of a layer share one entry)
     "value_rescale": {"0": rho_0, ...}  (sigma_qk / sigma_v folded into each layer's c_attn),
     "input_std": {"max": ..., "per_block": {...}, "sequences": n, "tokens": n, "data": "..."} | null}

Floats are written as the shortest decimal that reads back to the same float32, so the round trip
of gamma, beta and sigma_bar is exact. `apply_metadata` turns a stock export loaded by transformers
back into removed FakeLN blocks with the true sigma_bar, gamma and beta (logits unchanged).
"""

from __future__ import annotations

import json
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
import torch
from torch import nn

try:
    import tomllib  # Python 3.11+
except ImportError:  # Python 3.10: lnfree_version() then reads the installed distribution only
    tomllib = None

from .method.adapters import adapter_for
from .model_card import hub_base_model

METADATA_FILE = "lnfree_metadata.json"
FORMAT = "lnfree-metadata"
VERSION = 1
# gamma * sqrt(eps) / sigma_bar recomputed from the JSON must match the stored LN weight this closely
# (relative to the largest |weight|); a file whose weights were changed after export fails the check.
CONSISTENCY_RTOL = 1e-5


def lnfree_version() -> str:
    """lnfree's version: the installed distribution's, else pyproject.toml's beside the package."""
    try:
        return version("lnfree")
    except PackageNotFoundError:
        pass
    pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
    if tomllib is None:
        return "unknown"
    try:
        return str(tomllib.loads(pyproject.read_text())["project"]["version"])
    except (OSError, KeyError, ValueError):
        return "unknown"


def hub_model_id(name: str | None) -> str | None:
    """`name` if it reads as a Hugging Face Hub id ("gpt2", "openai-community/gpt2"), else None.

    A local folder, a run directory or a demo model ("demo:original") is not recorded: the metadata is
    published with the model and must not carry paths of this machine. One rule for the card and the
    metadata: model_card.hub_base_model.
    """
    return hub_base_model(name)


def _floats(t: torch.Tensor) -> list[float]:
    """float32 values as the shortest decimals that read back to the same float32."""
    arr = t.detach().float().cpu().numpy().ravel()
    return [float(np.format_float_positional(v, unique=True, trim="-")) for v in arr]


def _f32(x: float) -> float:
    return float(np.format_float_positional(np.float32(x), unique=True, trim="-"))


def build_metadata(model: nn.Module, *, base_model: str | None = None, schedule: dict | None = None,
                   input_std: dict | None = None, export_eps: float | None = None) -> dict:
    """The metadata of FakeLN model `model` (before its export to stock form).

    Generic over families: blocks are the adapter's FakeLN modules; two blocks whose gamma is the same
    Parameter (LN_qk and LN_v of a GPT-2 layer) share one "params" entry.
    """
    ad = adapter_for(model)
    fakes = ad.fakeln_modules(model)
    ln_free = bool(fakes) and all(m.is_removed for m in fakes.values())
    stock_names = _stock_module_names(model)
    blocks: dict[str, dict] = {}
    params: dict[str, dict] = {}
    owner: dict[int, str] = {}
    for name, m in fakes.items():
        key = owner.setdefault(id(m.weight), name)
        if key == name:
            params[name] = {"gamma": _floats(m.weight),
                            "beta": _floats(m.bias) if getattr(m, "bias", None) is not None else None}
        blocks[name] = {"sigma_bar": _f32(float(m.sigma)) if m.is_removed else None, "removed": m.is_removed,
                        "params": key, "stock_module": stock_names.get(name)}
    value_rescale = {}
    for name, b in blocks.items():
        if name.startswith("qk.") and ln_free:
            layer = name.split(".", 1)[1]
            value_rescale[layer] = _f32(b["sigma_bar"]) / _f32(blocks[f"v.{layer}"]["sigma_bar"])
    eps = next((m.eps for m in fakes.values()), None)
    return {
        "format": FORMAT, "version": VERSION, "lnfree_version": lnfree_version(),
        "model_type": getattr(model.config, "model_type", None), "base_model": hub_model_id(base_model),
        "ln_free": ln_free, "ln_eps": eps, "export_eps": export_eps if ln_free else None,
        "schedule": schedule, "blocks": blocks, "params": params, "value_rescale": value_rescale,
        "input_std": input_std,
    }


def _stock_module_names(model: nn.Module) -> dict[str, str]:
    """Block name -> the stock module that carries it in the export (GPT-2; empty for other families)."""
    if getattr(model.config, "model_type", None) != "gpt2":
        return {}
    n = int(model.config.n_layer)
    out = {"f": "transformer.ln_f"}
    for l in range(n):
        out.update({f"mlp.{l}": f"transformer.h.{l}.ln_2", f"qk.{l}": f"transformer.h.{l}.ln_1",
                    f"v.{l}": f"transformer.h.{l}.ln_1"})
    return out


def write_metadata(folder: str | Path, meta: dict) -> Path:
    path = Path(folder) / METADATA_FILE
    path.write_text(json.dumps(meta, separators=(",", ":")))
    return path


def read_metadata(folder: str | Path) -> dict | None:
    """The folder's lnfree metadata, or None when it has none (ValueError if the file is malformed)."""
    path = Path(folder) / METADATA_FILE
    if not path.is_file():
        return None
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON ({e}); delete it to load the export without it") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"{path} is not lnfree metadata (format {meta.get('format') if isinstance(meta, dict) else None!r})")
    if int(meta.get("version", 0)) > VERSION:
        raise ValueError(f"{path} has metadata version {meta.get('version')}, newer than this lnfree reads "
                         f"({VERSION}); update lnfree")
    return meta


def block_sigmas(meta: dict) -> dict[str, float]:
    """{block name: sigma_bar} of the removed blocks recorded in `meta`."""
    return {n: float(b["sigma_bar"]) for n, b in meta.get("blocks", {}).items() if b.get("removed")}


@torch.no_grad()
def apply_metadata(model: nn.Module, meta: dict) -> None:
    """Turn a stock LN-free export (loaded by transformers, huge eps) into removed FakeLN blocks with
    the true sigma_bar, gamma and beta from `meta` (GPT-2). Same function as the stock model.

    Checks first that the metadata describes these weights (LN weight = gamma * sqrt(eps) / sigma_qk,
    LN bias = beta, per stock module); raises ValueError (nothing changed) when it does not.
    """
    mtype = getattr(model.config, "model_type", None)
    if meta.get("model_type") != mtype or mtype != "gpt2":
        raise ValueError(f"metadata for model type {meta.get('model_type')!r} cannot be applied to a {mtype!r} "
                         "model (lnfree applies export metadata to GPT-2)")
    if not meta.get("ln_free"):
        raise ValueError("the metadata describes an export with live LayerNorms")
    base = model.transformer
    blocks, params = meta["blocks"], meta["params"]
    n_layers = len(base.h)
    expect = {f"{k}.{l}" for k in ("mlp", "qk", "v") for l in range(n_layers)} | {"f"}
    if set(blocks) != expect:
        raise ValueError(f"metadata blocks {sorted(set(blocks) ^ expect)[:4]} do not match a {n_layers}-layer GPT-2")

    def vec(name: str, key: str, like: torch.Tensor) -> torch.Tensor:
        v = torch.tensor(params[blocks[name]["params"]][key], dtype=torch.float64)
        if v.shape != like.shape:
            raise ValueError(f"metadata {key} of {name} has shape {tuple(v.shape)}, the model {tuple(like.shape)}")
        return v

    # 1. the metadata must describe these weights
    missing = [str(l) for l in range(n_layers) if str(l) not in (meta.get("value_rescale") or {})]
    if missing:
        raise ValueError(f"metadata has no value_rescale for layers {missing[:4]}")
    carriers = [(ln, f"qk.{l}") for l, b in enumerate(base.h) for ln in (b.ln_1,)]
    carriers += [(b.ln_2, f"mlp.{l}") for l, b in enumerate(base.h)] + [(base.ln_f, "f")]
    plan = []
    for ln, name in carriers:
        gamma, beta = vec(name, "gamma", ln.weight), vec(name, "beta", ln.bias)
        sigma = float(blocks[name]["sigma_bar"])
        w = ln.weight.detach().double()
        expected = gamma * (float(ln.eps) ** 0.5) / sigma
        scale = max(float(w.abs().max()), 1e-30)
        if float((expected - w).abs().max()) > CONSISTENCY_RTOL * scale or \
                float((beta - ln.bias.detach().double()).abs().max()) > CONSISTENCY_RTOL * max(1.0, float(beta.abs().max())):
            raise ValueError(f"the metadata does not describe these weights ({name}: LayerNorm weight is not "
                             "gamma * sqrt(eps) / sigma_bar); the export was changed after lnfree wrote it")
        plan.append((ln, gamma, beta))
    # 2. undo the value rescale in c_attn: W_v = W_v' / rho, b_v = b_v' - (1 - rho) * beta @ W_v
    d = int(model.config.n_embd)
    for l, b in enumerate(base.h):
        rho = float(meta["value_rescale"][str(l)])
        beta = vec(f"qk.{l}", "beta", b.ln_1.bias)
        w, bias = b.attn.c_attn.weight, b.attn.c_attn.bias
        w_v = w[:, 2 * d:].double() / rho
        bias[2 * d:] = (bias[2 * d:].double() - (1.0 - rho) * (beta @ w_v)).to(bias.dtype)
        w[:, 2 * d:] = w_v.to(w.dtype)
    # 3. the LayerNorms get gamma and beta, then become removed FakeLN blocks with the true sigma_bar
    ln_eps = float(meta.get("ln_eps") or 1e-5)
    for ln, gamma, beta in plan:
        ln.weight.copy_(gamma.to(ln.weight.dtype))
        ln.bias.copy_(beta.to(ln.bias.dtype))
        ln.eps = ln_eps
    model.config.layer_norm_epsilon = ln_eps
    fakes = adapter_for(model).install(model)
    for name, m in fakes.items():
        m.remove(float(blocks[name]["sigma_bar"]))
