"""Load a model from anywhere lnfree meets one, and know whether it is LN-free.

Sources (`load_model(spec)`):
  * a run directory (has checkpoints/): its newest checkpoint, FakeLN blocks and all; `RUN_DIR@N`
    picks the checkpoint of step N;
  * a checkpoint directory (has fakeln.json and model.safetensors);
  * a local Hugging Face folder (config.json + *.safetensors), e.g. an lnfree export;
  * a Hub id (`gpt2`, `schaeff/gpt2-small_LNFree300`);
  * a demo-suite model (`demo:original`, `demo:vanilla`, `demo:ln-free`).
Weights load only from safetensors files (never pickle). Stock LN-free exports (huge eps) are
recognised and converted to removed FakeLN blocks, so they are known as LN-free and run in any dtype.
Such an export stores only gamma / sigma_bar per LayerNorm; when it carries lnfree's metadata
(lnfree_metadata.json, see export_metadata) the blocks get their true sigma_bar, gamma and beta back,
else they are shown with sigma_bar = 1 (`info["sigma_source"]` says which).
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
from huggingface_hub import hf_hub_download
from torch import nn

# Imported here, once, at import time: transformers resolves these names lazily, and resolving them
# from several threads at once fails (see hf_lock). The GPT-2 modules are what AutoModel resolves to
# for every model lnfree trains; importing them now keeps that resolution out of the worker threads.
from transformers import AutoConfig, AutoModelForCausalLM  # noqa: E402
from transformers.models.gpt2 import modeling_gpt2  # noqa: F401,E402

from .checkpoint import CheckpointError, load_model_weights, newest_good_checkpoint, resolve_step_spec
from .checkpoint import verify_checkpoint
from .data.hub import hub_reachable
from .export_metadata import METADATA_FILE, apply_metadata, block_sigmas, read_metadata
from .hf_lock import HF_BUILD_LOCK
from .method.adapters import adapter_for
from .method.surgery import fakeln_modules, is_ln_free, load_fakeln_state
from .names import is_scheme_spec, resolve_model_name, split_scheme

_HF_LOAD_LOGGER = "transformers.modeling_utils"


class ModelLoadError(ValueError):
    """A model folder whose weights do not fill the model (missing or re-initialised weights)."""


class _DropLoadReport(logging.Filter):
    """Drops transformers' "LOAD REPORT" warning: lnfree checks the same information itself."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "LOAD REPORT" not in record.getMessage()


def _tied_keys(model: nn.Module) -> set[str]:
    """Parameter names that share storage with another parameter (tied weights, e.g. lm_head.weight
    with transformer.wte.weight when config.tie_word_embeddings): a checkpoint stores each once."""
    if not getattr(model.config, "tie_word_embeddings", False):
        return set()
    seen: dict[int, str] = {}
    tied: set[str] = set()
    for name, p in model.named_parameters(remove_duplicate=False):
        if p.data_ptr() in seen:
            tied.add(name)
        else:
            seen[p.data_ptr()] = name
    return tied


def _check_loading_info(spec: str, model: nn.Module, info: dict) -> None:
    """Raise ModelLoadError unless every weight of `model` came from the checkpoint (tied copies aside)."""
    missing = set(info.get("missing_keys") or ()) - _tied_keys(model)
    mismatched = {k[0] if isinstance(k, tuple) else k for k in info.get("mismatched_keys") or ()}
    if missing or mismatched:
        parts = []
        if missing:
            parts.append(f"missing from the checkpoint: {sorted(missing)[:8]}")
        if mismatched:
            parts.append(f"of another shape in the checkpoint: {sorted(mismatched)[:8]}")
        raise ModelLoadError(
            f"{spec}: some weights would be newly initialised ({'; '.join(parts)}), so the model would not be "
            "the one saved. Check that the folder's config.json matches its .safetensors (re-save it with "
            "save_pretrained)."
        )


def _from_pretrained(spec: str, **kwargs) -> nn.Module:
    """AutoModelForCausalLM.from_pretrained without transformers' load report; missing weights are errors."""
    log = logging.getLogger(_HF_LOAD_LOGGER)
    drop = _DropLoadReport()
    log.addFilter(drop)
    try:
        model, info = AutoModelForCausalLM.from_pretrained(spec, output_loading_info=True, **kwargs)
    finally:
        log.removeFilter(drop)
    _check_loading_info(spec, model, info)
    return model


@dataclass
class LoadedModel:
    model: nn.Module
    source: str  # "run" | "checkpoint" | "folder" | "hub" | "demo"
    spec: str
    ln_free: bool
    info: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        return self.info.get("label") or self.spec


def _build_from_checkpoint(ckpt: Path, attn_implementation: str) -> nn.Module:
    config = AutoConfig.from_pretrained(str(ckpt))
    config._attn_implementation = attn_implementation
    model = AutoModelForCausalLM.from_config(config, attn_implementation=attn_implementation)
    fake = json.loads((ckpt / "fakeln.json").read_text())
    if fake:
        adapter_for(model).install(model)
    load_model_weights(model, ckpt)
    if fake:
        load_fakeln_state(model, fake)
    return model


def resolve_checkpoint(spec: str) -> Path | None:
    """The checkpoint directory a run/checkpoint spec points to, or None if it is not one."""
    path_s, _, step = spec.partition("@")
    path = Path(path_s)
    if (path / "fakeln.json").exists() and (path / "model.safetensors").exists():
        why = verify_checkpoint(path, hashes=False)
        if why:
            raise CheckpointError(f"checkpoint {path} is corrupt ({why}); use an earlier checkpoint of the run")
        return path
    if (path / "checkpoints").is_dir():
        if step:
            return resolve_step_spec(path, step)
        good = newest_good_checkpoint(path, hashes=False)
        if good.skipped:
            print(good.warning(), file=sys.stderr)
        if good.path is None:
            if good.skipped:
                raise CheckpointError(f"run {path} has no usable checkpoint: {good.warning()}")
            raise FileNotFoundError(f"run {path} has no complete checkpoint yet")
        return good.path
    if step:
        raise CheckpointError(f"{spec}: '@STEP' picks a checkpoint of a run directory, and {path} is not one")
    return None


def model_context(spec: str) -> int | None:
    """How many positions `spec`'s model takes (config n_positions / max_position_embeddings), read from
    its config only (no weights); None when the config cannot be read here (then loading it fails too,
    with its own message)."""
    try:
        if is_scheme_spec(spec):
            spec = str(resolve_model_name(spec))
        ckpt = resolve_checkpoint(spec)
        where = str(ckpt) if ckpt is not None else spec
        kwargs = {}
        if ckpt is None and not Path(spec).exists():
            kwargs["local_files_only"] = not hub_reachable()
        with HF_BUILD_LOCK:
            config = AutoConfig.from_pretrained(where, **kwargs)
    except (OSError, ValueError, KeyError):
        return None
    for name in ("n_positions", "max_position_embeddings", "n_ctx"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def fit_seq_len(requested: int | None, default: int, specs: list[str], flag: str = "--seq-len") -> int:
    """The sequence length to use with the models `specs`: `requested` if given, else `default` capped at
    the smallest model context (defaults follow the model). A requested length beyond a model's context
    raises ValueError naming the model and the largest length it takes (its position embeddings would
    index out of range)."""
    contexts = {s: model_context(s) for s in specs}
    known = {s: c for s, c in contexts.items() if c is not None}
    if requested is not None:
        if requested < 1:
            raise ValueError(f"{flag} must be at least 1, got {requested}")
        too_short = {s: c for s, c in known.items() if c < requested}
        if too_short:
            spec, ctx = min(too_short.items(), key=lambda kv: kv[1])
            raise ValueError(f"{flag} {requested} is longer than the context of {spec} ({ctx} positions); "
                             f"use {flag} {ctx} or less")
        return requested
    return min([default, *known.values()])


def load_model(spec: str, *, device: str | torch.device = "cpu", dtype: torch.dtype | None = None,
               attn_implementation: str = "sdpa") -> LoadedModel:
    """Load `spec` (see module docstring) in eval mode on `device`.

    Thread-safe: the model is built under HF_BUILD_LOCK (transformers' build state is process-wide),
    so concurrent calls load one after another and each gets exactly the model a lone call would.
    """
    with HF_BUILD_LOCK:
        return _load_model(spec, device=device, dtype=dtype, attn_implementation=attn_implementation)


def _load_model(spec: str, *, device: str | torch.device, dtype: torch.dtype | None,
                attn_implementation: str) -> LoadedModel:
    source = "hub"
    info: dict = {}
    parts = split_scheme(spec)
    if parts is not None:  # a plug-in's name (demo:original): the plug-in knows its own layout
        path = resolve_model_name(spec)
        loaded = load_model(str(path), device=device, dtype=dtype, attn_implementation=attn_implementation)
        loaded.source, loaded.spec = parts[0], spec
        return loaded
    ckpt = resolve_checkpoint(spec)
    if ckpt is not None:
        model = _build_from_checkpoint(ckpt, attn_implementation)
        source = "run" if ckpt.parent.name == "checkpoints" else "checkpoint"
        info["checkpoint"] = str(ckpt)
    else:
        path = Path(spec)
        if path.exists():
            if not (path / "config.json").exists():
                raise FileNotFoundError(
                    f"{spec} is neither a Hugging Face model folder (no config.json), a run directory "
                    "(no checkpoints/), nor a checkpoint (no fakeln.json)"
                )
            if not any(path.glob("*.safetensors")):
                raise FileNotFoundError(
                    f"{spec} has no .safetensors weights; lnfree loads only safetensors (no pickle). "
                    "Convert it with `model.save_pretrained(dir, safe_serialization=True)`."
                )
            source = "folder"
        kwargs = dict(use_safetensors=True, attn_implementation=attn_implementation, dtype=torch.float32)
        if source == "hub":
            kwargs["local_files_only"] = not hub_reachable()
        try:
            model = _from_pretrained(spec, **kwargs)
        except OSError as e:
            if kwargs.get("local_files_only"):
                raise FileNotFoundError(
                    f"model {spec!r} is not a local folder, not in the Hugging Face cache, and the Hub is not "
                    "reachable (or HF_HUB_OFFLINE is set). Use a local model folder, a run directory, or the "
                    "offline demo suite (`python -m lnfree_core demo build`, then demo:original)."
                ) from None
            raise FileNotFoundError(f"cannot load model {spec!r}: {e}") from None
        adapter = adapter_for(model)
        if adapter.is_stock_lnfree(model):
            info["converted_from"] = "stock LN-free export (huge eps)"
            _restore_lnfree(model, adapter, spec, source, kwargs.get("local_files_only"), info)
    if ckpt is not None:
        info["sigma_source"] = "checkpoint (fakeln.json)"
    model.eval()
    if dtype is not None:
        model.to(dtype=dtype)
        for m in fakeln_modules(model).values():  # sigma_bar and tracked sigma stay float32
            for name in ("sigma", "sigma_avg"):
                setattr(m, name, getattr(m, name).float())
    model.to(device)
    mods = fakeln_modules(model)
    info["sigma_bar"] = {n: float(m.sigma) for n, m in mods.items() if m.is_removed}
    info["n_removed"] = sum(m.is_removed for m in mods.values())
    info["n_blocks"] = len(mods)
    return LoadedModel(model=model, source=source, spec=spec, ln_free=is_ln_free(model), info=info)


SIGMA_UNKNOWN = ("not recorded: this export stores only gamma / sigma_bar in each LayerNorm weight (weight / "
                 "sqrt(eps)) and folds the value path's sigma_qk / sigma_v into c_attn, so its blocks are shown "
                 "with sigma_bar = 1 and gamma = weight / sqrt(eps); the function is exact, the split into gamma "
                 "and sigma_bar is unknown (an lnfree export carries it in lnfree_metadata.json)")


def _export_metadata(spec: str, source: str, local_only: bool | None) -> dict | None:
    """lnfree_metadata.json of a local export folder or a Hub repo, or None if it has none."""
    if source == "folder":
        return read_metadata(spec)
    try:
        path = hf_hub_download(spec, METADATA_FILE, local_files_only=bool(local_only))
    except Exception:  # not in the repo, not cached offline, or the Hub unreachable: no metadata
        return None
    return read_metadata(Path(path).parent)


def _restore_lnfree(model: nn.Module, adapter, spec: str, source: str, local_only: bool | None, info: dict) -> None:
    """Removed FakeLN blocks for a stock LN-free export: the true sigma_bar from its lnfree metadata
    when it has some that describes these weights, else sigma_bar = 1 (what the weights alone tell)."""
    try:
        meta = _export_metadata(spec, source, local_only)
    except ValueError as e:  # a malformed metadata file: load without it, and say so
        meta, info["metadata_error"] = None, str(e)
    mtype = getattr(model.config, "model_type", None)
    if meta is not None and mtype != "gpt2" and meta.get("model_type") == mtype:
        adapter.from_stock_lnfree(model)
        info["recorded_sigma_bar"] = block_sigmas(meta)
        info["sigma_source"] = (f"recorded in lnfree_metadata.json (info['recorded_sigma_bar']), not restored: lnfree "
                                f"restores sigma_bar into the blocks for GPT-2 only, so this {mtype} export's blocks "
                                "are shown with sigma_bar = 1 and gamma = weight / sqrt(eps) (the function is exact)")
        return
    if meta is not None:
        try:
            apply_metadata(model, meta)
            info["sigma_source"] = "lnfree metadata (lnfree_metadata.json)"
            info["metadata"] = {k: meta.get(k) for k in ("lnfree_version", "base_model", "schedule", "input_std")}
            return
        except ValueError as e:
            info["metadata_error"] = str(e)
    adapter.from_stock_lnfree(model)
    info["sigma_source"] = SIGMA_UNKNOWN + (f" ({info['metadata_error']})" if "metadata_error" in info else "")
