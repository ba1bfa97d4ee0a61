"""Checkpoints of a run: safetensors and JSON only (no pickle), written atomically.

    RUN_DIR/checkpoints/step_00000120/
        config.json            the Hugging Face model config
        model.safetensors      weights in FakeLN layout (shared tensors stored once)
        fakeln.json            each FakeLN block: removed, sigma_bar, tracked sigma_avg
        optimizer.safetensors  AdamW moments and step counts, keyed "<param name>.<state key>"
        trainer_state.json     steps done, sequences consumed, RNG states, guard history

A checkpoint is first written to a temporary directory beside its final place and then renamed,
so a crash at any moment leaves either the previous checkpoints or the new complete one.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from safetensors.torch import load_model as st_load_model
from torch import nn

CKPT_DIR = "checkpoints"


def checkpoint_dirs(run_dir: str | Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    root = Path(run_dir) / CKPT_DIR
    if not root.is_dir():
        return []
    dirs = [p for p in root.iterdir() if p.is_dir() and p.name.startswith("step_") and (p / "trainer_state.json").exists()]
    return sorted(dirs, key=lambda p: int(p.name.split("_")[1]))


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    dirs = checkpoint_dirs(run_dir)
    return dirs[-1] if dirs else None


def gather_state(model: nn.Module, optimizer: torch.optim.Optimizer | None) -> tuple[dict, dict | None]:
    """Full (unsharded, CPU) model and optimizer state dicts, keyed by parameter name.

    A collective under FSDP: every rank must call it; the result is complete on rank 0. Uses
    torch.distributed.checkpoint's state-dict API, which treats plain, DDP and FSDP models alike.
    """
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict, get_optimizer_state_dict

    opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
    msd = get_model_state_dict(model, options=opts)
    osd = get_optimizer_state_dict(model, optimizer, options=opts) if optimizer is not None else None
    return msd, osd


def _dedupe_shared(msd: dict, aliases: dict[str, str]) -> dict:
    """Drop the second name of each shared parameter (tied embeddings, ln_qk/ln_v gamma and beta)."""
    return {k: v.detach().to("cpu").contiguous() for k, v in msd.items()
            if not (k in aliases and aliases[k] in msd)}


def save_checkpoint(run_dir: str | Path, step: int, model: nn.Module, model_state: dict, optim_state: dict | None,
                    fakeln: dict, trainer_state: dict, aliases: dict[str, str], keep: int = 2,
                    protect=()) -> Path:
    """Write checkpoint `step` atomically (call on rank 0 with `gather_state`'s output); keep the newest
    `keep`, and never delete the checkpoints of the steps in `protect` (keep_steps: release checkpoints)."""
    root = Path(run_dir) / CKPT_DIR
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{step:08d}"
    tmp = root / f".tmp_step_{step:08d}_{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    model.config.to_json_file(str(tmp / "config.json"))
    save_file(_dedupe_shared(model_state, aliases), str(tmp / "model.safetensors"), metadata={"format": "pt"})
    (tmp / "fakeln.json").write_text(json.dumps(fakeln, indent=1))
    if optim_state is not None:
        tensors, scalars = {}, {}
        for pname, st in optim_state["state"].items():
            for key, val in st.items():
                if torch.is_tensor(val):
                    tensors[f"{pname}.{key}"] = val.detach().to("cpu").contiguous()
                else:
                    scalars[f"{pname}.{key}"] = val
        save_file(tensors, str(tmp / "optimizer.safetensors"))
        trainer_state = {**trainer_state, "optimizer_meta": {"param_groups": optim_state["param_groups"],
                                                             "scalars": scalars}}
    (tmp / "trainer_state.json").write_text(json.dumps(trainer_state))
    for f in tmp.iterdir():  # make the files durable before the rename publishes them
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    kept = {f"step_{int(s):08d}" for s in protect}
    for old in checkpoint_dirs(run_dir)[:-keep]:
        if old.name not in kept:
            shutil.rmtree(old, ignore_errors=True)
    return final


def shared_aliases(model: nn.Module) -> dict[str, str]:
    """Second names of shared parameters and buffers -> the first name (on an unsharded model)."""
    first: dict[int, str] = {}
    aliases: dict[str, str] = {}
    for name, t in list(model.named_parameters(remove_duplicate=False)) + list(model.named_buffers(remove_duplicate=False)):
        key = id(t)
        if key in first:
            aliases[name] = first[key]
        else:
            first[key] = name
    return aliases


def load_model_weights(model: nn.Module, ckpt: str | Path) -> None:
    """Load model.safetensors of a checkpoint into a model of the same (FakeLN) layout."""
    missing, unexpected = st_load_model(model, str(Path(ckpt) / "model.safetensors"), strict=False)
    missing = [k for k in missing if not k.endswith(("removed", "sigma", "sigma_avg", "sigma_avg_valid"))]
    if missing or unexpected:
        raise ValueError(f"checkpoint {ckpt} does not fit the model: missing {missing[:5]}, unexpected {unexpected[:5]}")


def load_optimizer(optimizer: torch.optim.Optimizer, model: nn.Module, ckpt: str | Path, meta: dict) -> None:
    """Restore AdamW state saved by save_checkpoint (works for plain, DDP and FSDP-sharded models)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    tensors = load_file(str(Path(ckpt) / "optimizer.safetensors"))
    state: dict[str, dict] = {}
    for flat, val in list(tensors.items()) + list(meta.get("scalars", {}).items()):
        pname, _, key = flat.rpartition(".")
        state.setdefault(pname, {})[key] = val
    set_optimizer_state_dict(model, optimizer, {"state": state, "param_groups": meta["param_groups"]},
                             options=StateDictOptions(full_state_dict=True))


def read_checkpoint_meta(ckpt: str | Path) -> tuple[dict, dict]:
    """(fakeln state, trainer state) of a checkpoint."""
    ckpt = Path(ckpt)
    return json.loads((ckpt / "fakeln.json").read_text()), json.loads((ckpt / "trainer_state.json").read_text())


def write_checkpoint(run_dir: str | Path, step: int, model: nn.Module, optimizer: torch.optim.Optimizer | None = None,
                     fakeln: dict | None = None, trainer_state: dict | None = None, keep: int = 2) -> Path:
    """Single-process convenience: gather and save a checkpoint of an unsharded model in one call."""
    msd, osd = gather_state(model, optimizer)
    return save_checkpoint(run_dir, step, model, msd, osd, fakeln or {}, trainer_state or {"step": step},
                           shared_aliases(model), keep=keep)
