"""Checkpoints of a run: safetensors and JSON only (no pickle), written atomically.

    RUN_DIR/checkpoints/step_00000120/
        config.json            the Hugging Face model config
        model.safetensors      weights in FakeLN layout (shared tensors stored once)
        fakeln.json            each FakeLN block: removed, sigma_bar, tracked sigma_avg
        optimizer.safetensors  AdamW moments and step counts, keyed "<param name>.<state key>"
        trainer_state.json     steps done, sequences consumed, RNG states, guard history
        manifest.json          written last: {"files": {name: {"size": int, "sha256": hex}}}

A checkpoint is first written to a temporary directory beside its final place (`.tmp_step_*`) and
then renamed, so a crash at any moment leaves either the previous checkpoints or the new complete
one. A kill -9 or a full disk can leave a `.tmp_step_*` folder behind: `remove_partial_checkpoints`
deletes them (the trainer calls it at start-up while it holds the run's lock). A checkpoint is
trusted only after `verify_checkpoint` (every file of the manifest present with its size, and with
its SHA-256 when asked; JSON readable; safetensors headers consistent with the file sizes):
`newest_good_checkpoint` falls back past corrupt ones and says which.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from safetensors.torch import load_model as st_load_model
from torch import nn

CKPT_DIR = "checkpoints"
MANIFEST = "manifest.json"
TMP_PREFIX = ".tmp_step_"
CORRUPT_PREFIX = "corrupt_step_"
REQUIRED_FILES = ("config.json", "model.safetensors", "fakeln.json", "trainer_state.json")


class CheckpointWriteError(OSError):
    """Writing a checkpoint failed (full disk, I/O error); the half-written copy is already removed."""


class CheckpointError(ValueError):
    """A checkpoint that cannot be used (missing, corrupt, or a bad step spec); the message says why."""


def checkpoint_dirs(run_dir: str | Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    root = Path(run_dir) / CKPT_DIR
    if not root.is_dir():
        return []
    dirs = [p for p in root.iterdir() if p.is_dir() and p.name.startswith("step_") and (p / "trainer_state.json").exists()]
    return sorted(dirs, key=lambda p: int(p.name.split("_")[1]))


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest checkpoint folder (not verified: see newest_good_checkpoint)."""
    dirs = checkpoint_dirs(run_dir)
    return dirs[-1] if dirs else None


def checkpoint_step(ckpt: str | Path) -> int:
    return int(Path(ckpt).name.split("_")[1])


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 24), b""):
            h.update(block)
    return h.hexdigest()


def _check_safetensors(path: Path) -> str | None:
    """Why the safetensors file at `path` is unusable (truncated, bad header), or None."""
    size = path.stat().st_size
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
            if len(head) < 8:
                return f"{path.name} is truncated ({size} bytes)"
            n = struct.unpack("<Q", head)[0]
            if n > size - 8:
                return f"{path.name} is truncated (header of {n} bytes, file of {size})"
            header = json.loads(fh.read(n))
    except (OSError, ValueError) as e:
        return f"{path.name} has an unreadable header ({e})"
    end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
    if 8 + n + end != size:
        return f"{path.name} is truncated or padded: {size} bytes, its header describes {8 + n + end}"
    return None


def verify_checkpoint(ckpt: str | Path, hashes: bool = True) -> str | None:
    """Why checkpoint `ckpt` cannot be trusted, or None if it is good.

    Checks: every required file present; with a manifest (written last by save_checkpoint), every
    listed file has its recorded size and (hashes=True) SHA-256; the JSON files parse; the
    safetensors headers match the file sizes. Checkpoints from before manifests get the structural
    checks only.
    """
    ckpt = Path(ckpt)
    missing = [f for f in REQUIRED_FILES if not (ckpt / f).is_file()]
    if missing:
        return f"missing {', '.join(missing)}"
    man_path = ckpt / MANIFEST
    if man_path.exists():
        try:
            files = json.loads(man_path.read_text())["files"]
            assert isinstance(files, dict)
        except (OSError, ValueError, KeyError, TypeError, AssertionError):
            return f"{MANIFEST} is unreadable"
        for name, rec in files.items():
            f = ckpt / name
            if not f.is_file():
                return f"{name} is listed in the manifest but missing"
            if f.stat().st_size != rec.get("size"):
                return f"{name} has {f.stat().st_size} bytes, the manifest says {rec.get('size')}"
            if hashes and _sha256(f) != rec.get("sha256"):
                return f"{name} does not match its SHA-256 in the manifest (the file is corrupt)"
    for name in ("fakeln.json", "trainer_state.json", "config.json"):
        try:
            data = json.loads((ckpt / name).read_text())
        except (OSError, ValueError) as e:
            return f"{name} is not valid JSON ({e})"
        if not isinstance(data, dict):
            return f"{name} does not hold a JSON object"
    for name in ("model.safetensors", "optimizer.safetensors"):
        if (ckpt / name).exists():
            why = _check_safetensors(ckpt / name)
            if why:
                return why
    try:
        state = json.loads((ckpt / "trainer_state.json").read_text())
        if not isinstance(state.get("step"), int):
            return "trainer_state.json has no integer step"
    except (OSError, ValueError):
        return "trainer_state.json is unreadable"
    return None


@dataclass
class GoodCheckpoint:
    """The newest checkpoint that verified, and the newer ones that did not (with why)."""

    path: Path | None
    skipped: list[tuple[Path, str]] = field(default_factory=list)

    def warning(self) -> str | None:
        if not self.skipped:
            return None
        bad = "; ".join(f"{p.name}: {why}" for p, why in self.skipped)
        newest = checkpoint_step(self.skipped[0][0])
        if self.path is None:
            return (f"warning: no checkpoint of this run verified ({bad}); training restarts from step 0 and "
                    f"steps 1-{newest} will be redone")
        step = checkpoint_step(self.path)
        return (f"warning: checkpoint(s) failed verification ({bad}); using {self.path.name} instead: "
                f"steps {step + 1}-{newest} will be redone")


def newest_good_checkpoint(run_dir: str | Path, hashes: bool = True) -> GoodCheckpoint:
    """The newest checkpoint of a run that passes verify_checkpoint, skipping (and reporting) corrupt ones."""
    skipped = []
    for ckpt in reversed(checkpoint_dirs_any(run_dir)):
        why = verify_checkpoint(ckpt, hashes=hashes)
        if why is None:
            return GoodCheckpoint(ckpt, skipped)
        skipped.append((ckpt, why))
    return GoodCheckpoint(None, skipped)


def checkpoint_dirs_any(run_dir: str | Path) -> list[Path]:
    """Every step_* folder of a run, complete or not, oldest first."""
    root = Path(run_dir) / CKPT_DIR
    if not root.is_dir():
        return []
    dirs = []
    for p in root.iterdir():
        if p.is_dir() and p.name.startswith("step_"):
            try:
                checkpoint_step(p)
            except ValueError:
                continue
            dirs.append(p)
    return sorted(dirs, key=checkpoint_step)


def set_aside_corrupt(ckpt: Path) -> Path:
    """Rename a corrupt checkpoint to corrupt_step_N (kept for inspection, never loaded, never rotated)."""
    dest = ckpt.with_name(CORRUPT_PREFIX + ckpt.name.split("_", 1)[1])
    if dest.exists():
        shutil.rmtree(dest)
    os.replace(ckpt, dest)
    return dest


def remove_partial_checkpoints(run_dir: str | Path) -> list[str]:
    """Delete the half-written `.tmp_step_*` folders a killed trainer or a full disk left behind.

    Call only while holding the run's trainer lock (no live trainer is writing one). Returns their names.
    """
    root = Path(run_dir) / CKPT_DIR
    if not root.is_dir():
        return []
    removed = []
    for p in root.iterdir():
        if p.name.startswith(TMP_PREFIX):
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
            removed.append(p.name)
    return sorted(removed)


def resolve_step_spec(run_dir: str | Path, step: str) -> Path:
    """The checkpoint folder of `RUN_DIR@STEP` (STEP an integer), verified (sizes and structure)."""
    try:
        n = int(step)
        if n < 0:
            raise ValueError
    except ValueError:
        raise CheckpointError(f"{run_dir}@{step}: the part after '@' must be a step number "
                              f"(e.g. {run_dir}@100); available: {available_steps(run_dir)}") from None
    ckpt = Path(run_dir) / CKPT_DIR / f"step_{n:08d}"
    if not ckpt.is_dir():
        raise CheckpointError(f"run {run_dir} has no checkpoint for step {n}; available: {available_steps(run_dir)}")
    why = verify_checkpoint(ckpt, hashes=False)
    if why:
        raise CheckpointError(f"checkpoint {ckpt} is corrupt ({why}); pick another step: {available_steps(run_dir)}")
    return ckpt


def available_steps(run_dir: str | Path) -> list[int]:
    return [checkpoint_step(p) for p in checkpoint_dirs(run_dir)]


def gather_state(model: nn.Module, optimizer: torch.optim.Optimizer | None) -> tuple[dict, dict | None]:
    """Full (unsharded, CPU) model and optimizer state dicts, keyed by parameter name.

    A collective under FSDP: every rank must call it; the result is complete on rank 0. Uses
    torch.distributed.checkpoint's state-dict API, which treats plain, DDP and FSDP models alike.
    """
    # local: torch.distributed.checkpoint costs ~1.1 s to import (measured); loading a model needs none
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
    tmp = root / f"{TMP_PREFIX}{step:08d}_{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        _write_checkpoint_files(tmp, model, model_state, optim_state, fakeln, trainer_state, aliases)
    except Exception as e:  # full disk, quota, I/O error (safetensors reports them as its own error type)
        shutil.rmtree(tmp, ignore_errors=True)  # free the space at once; the older checkpoints stay
        why = getattr(e, "strerror", None) or str(e)
        raise CheckpointWriteError(f"writing checkpoint step {step} failed ({why}); the half-written copy was "
                                   f"removed and the earlier checkpoints are intact: free space in {root} and "
                                   "resume") from e
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    kept = {f"step_{int(s):08d}" for s in protect}
    for old in checkpoint_dirs(run_dir)[:-keep]:
        if old.name not in kept:
            shutil.rmtree(old, ignore_errors=True)
    return final


def _write_checkpoint_files(tmp: Path, model: nn.Module, model_state: dict, optim_state: dict | None, fakeln: dict,
                            trainer_state: dict, aliases: dict[str, str]) -> None:
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
    files = {}
    for f in sorted(tmp.iterdir()):  # make the files durable before the manifest and the rename publish them
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
        files[f.name] = {"size": f.stat().st_size, "sha256": _sha256(f)}
    with open(tmp / MANIFEST, "w") as fh:  # last: a checkpoint without it (or not matching it) is not trusted
        fh.write(json.dumps({"files": files}, indent=1))
        fh.flush()
        os.fsync(fh.fileno())


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
    # local: torch.distributed.checkpoint costs ~1.1 s to import (measured); loading a model needs none
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
