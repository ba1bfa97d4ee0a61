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
from safetensors.torch import save_model as st_save_model
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


def _optimizer_tensors(optimizer: torch.optim.Optimizer, names: dict[int, str]) -> tuple[dict, dict]:
    sd = optimizer.state_dict()
    tensors, meta = {}, {"param_groups": sd["param_groups"], "scalars": {}}
    for idx, state in sd["state"].items():
        pname = names[idx]
        for key, val in state.items():
            if torch.is_tensor(val):
                tensors[f"{pname}.{key}"] = val.detach().to("cpu").contiguous()
            else:
                meta["scalars"][f"{pname}.{key}"] = val
    return tensors, meta


def param_index_names(optimizer: torch.optim.Optimizer, model: nn.Module) -> dict[int, str]:
    """Optimizer state index -> parameter name (the order of the param groups' params)."""
    by_id = {id(p): n for n, p in model.named_parameters()}
    out, i = {}, 0
    for group in optimizer.param_groups:
        for p in group["params"]:
            out[i] = by_id[id(p)]
            i += 1
    return out


def save_checkpoint(run_dir: str | Path, step: int, model: nn.Module, optimizer: torch.optim.Optimizer | None,
                    fakeln: dict, trainer_state: dict, keep: int = 2) -> Path:
    """Write checkpoint `step` atomically; keep the newest `keep` checkpoints."""
    root = Path(run_dir) / CKPT_DIR
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{step:08d}"
    tmp = root / f".tmp_step_{step:08d}_{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    model.config.to_json_file(str(tmp / "config.json"))
    st_save_model(model, str(tmp / "model.safetensors"))
    (tmp / "fakeln.json").write_text(json.dumps(fakeln, indent=1))
    if optimizer is not None:
        names = param_index_names(optimizer, model)
        tensors, meta = _optimizer_tensors(optimizer, names)
        save_file(tensors, str(tmp / "optimizer.safetensors"))
        trainer_state = {**trainer_state, "optimizer_meta": meta}
    (tmp / "trainer_state.json").write_text(json.dumps(trainer_state))
    for f in tmp.iterdir():  # make the files durable before the rename publishes them
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    for old in checkpoint_dirs(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_model_weights(model: nn.Module, ckpt: str | Path) -> None:
    """Load model.safetensors of a checkpoint into a model of the same (FakeLN) layout."""
    missing, unexpected = st_load_model(model, str(Path(ckpt) / "model.safetensors"), strict=False)
    missing = [k for k in missing if not k.endswith(("removed", "sigma", "sigma_avg", "sigma_avg_valid"))]
    if missing or unexpected:
        raise ValueError(f"checkpoint {ckpt} does not fit the model: missing {missing[:5]}, unexpected {unexpected[:5]}")


def load_optimizer(optimizer: torch.optim.Optimizer, model: nn.Module, ckpt: str | Path, meta: dict) -> None:
    names = param_index_names(optimizer, model)
    tensors = load_file(str(Path(ckpt) / "optimizer.safetensors"))
    state = {}
    for idx, pname in names.items():
        entry = {}
        for key in ("step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
            if f"{pname}.{key}" in tensors:
                entry[key] = tensors[f"{pname}.{key}"]
            elif f"{pname}.{key}" in meta["scalars"]:
                entry[key] = meta["scalars"][f"{pname}.{key}"]
        if entry:
            state[idx] = entry
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def read_checkpoint_meta(ckpt: str | Path) -> tuple[dict, dict]:
    """(fakeln state, trainer state) of a checkpoint."""
    ckpt = Path(ckpt)
    return json.loads((ckpt / "fakeln.json").read_text()), json.loads((ckpt / "trainer_state.json").read_text())
