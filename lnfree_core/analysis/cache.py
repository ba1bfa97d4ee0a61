"""On-disk cache of analysis results, keyed by model, data and settings, so nothing is computed twice.

Key. A JSON object of everything that determines a result, hashed (SHA-256 of its canonical JSON,
sorted keys; the first 24 hex digits name the entry):

    {"kind": "ce", "version": 3,
     "model": model_identity(spec),   # spec + resolved checkpoint/folder + (mtime_ns, size) of weight files
     "data": {...},                   # dataset name/path (+ file stamps), split, n, seq_len; or a token hash
     "settings": {...}}               # e.g. precision; never batch size or device index

A run directory spec resolves to its newest checkpoint, so a new checkpoint is a new key; a Hub id is
identified by its name alone (no revision is known offline).

Layout:

    CACHE_DIR/                        default ./lnfree_cache
      <kind>/                         ce | first_token | confidence | dla
        <key>/
          key.json                    the key object (human-readable)
          result.json                 scalars and metadata (label, ln_free, created, ...)
          <name>.npy                  arrays, e.g. ce/<key>/losses.npy float32 [n, seq_len - 1]

An entry is written to a temporary sibling directory and renamed into place, so readers see complete
entries only; of two concurrent writers of the same key, the first rename wins.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..names import is_scheme_spec, resolve_model_name

DEFAULT_CACHE_DIR = "./lnfree_cache"
CACHE_VERSION = 3  # 2: CE and ablation logits from a float32 unembedding under bf16; 3: paper definitions
# (sink counts per query, resid_pre/mid/post centred and raw norms, per-token ablation dCE, last-position DLA)


def _stamp(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_mtime_ns, st.st_size]


def model_identity(spec: str) -> dict:
    """What identifies the weights behind a model spec (see module docstring)."""
    # local: models loads torch + transformers (~5.8 s, measured); the CLI's parser imports this module
    from ..models import resolve_checkpoint

    if is_scheme_spec(spec):
        try:
            return {"spec": spec, "resolved": model_identity(str(resolve_model_name(spec)))}
        except (FileNotFoundError, KeyError, ValueError):
            return {"spec": spec}
    ckpt = resolve_checkpoint(spec)
    if ckpt is not None:
        files = {f: _stamp(ckpt / f) for f in ("model.safetensors", "fakeln.json") if (ckpt / f).exists()}
        return {"spec": spec, "checkpoint": str(ckpt.resolve()), "files": files}
    path = Path(spec)
    if path.exists():
        names = sorted(p.name for p in path.iterdir() if p.suffix in (".safetensors", ".json"))
        return {"spec": spec, "folder": str(path.resolve()), "files": {f: _stamp(path / f) for f in names}}
    return {"spec": spec, "hub": True}


def path_identity(path: str | os.PathLike) -> dict:
    """Resolved path and the (mtime_ns, size) stamps of the data files under it."""
    p = Path(path)
    files = [p] if p.is_file() else sorted(f for f in p.rglob("*") if f.is_file() and not
                                           any(part.startswith(".") for part in f.relative_to(p).parts))
    return {"path": str(p.resolve()), "files": {str(f.relative_to(p) if f != p else f.name): _stamp(f) for f in files}}


def tokens_identity(tokens) -> dict:
    """Identity of an in-memory token array: shape and SHA-256 of its int64 bytes."""
    a = np.ascontiguousarray(np.asarray(tokens), dtype=np.int64)
    return {"tokens_sha256": hashlib.sha256(a.tobytes()).hexdigest(), "shape": list(a.shape)}


def key_hash(key: dict) -> str:
    blob = json.dumps(key, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


@dataclass
class CacheEntry:
    path: Path | None  # None: an entry held in memory only (caching disabled)
    key: dict
    meta: dict
    memory: dict[str, np.ndarray] | None = None

    def array(self, name: str, mmap: bool = True) -> np.ndarray:
        """A stored array (memory-mapped read-only by default: opening a large one costs nothing)."""
        if self.memory is not None:
            return self.memory[name]
        return np.load(self.path / f"{name}.npy", mmap_mode="r" if mmap else None)

    def arrays(self) -> list[str]:
        if self.memory is not None:
            return sorted(self.memory)
        return sorted(p.stem for p in self.path.glob("*.npy"))


class AnalysisCache:
    """A cache directory (created on first write). `root=None` disables caching: get() always misses
    and put() returns an in-memory entry."""

    def __init__(self, root: str | os.PathLike | None = DEFAULT_CACHE_DIR):
        self.root = Path(root) if root is not None else None

    def entry_dir(self, kind: str, key: dict) -> Path | None:
        return None if self.root is None else self.root / kind / key_hash(key)

    def get(self, kind: str, key: dict) -> CacheEntry | None:
        d = self.entry_dir(kind, key)
        if d is None or not (d / "result.json").exists():
            return None
        stored = json.loads((d / "key.json").read_text())
        if stored != json.loads(json.dumps(key, default=str)):  # hash collision or foreign entry
            return None
        return CacheEntry(d, stored, json.loads((d / "result.json").read_text()))

    def put(self, kind: str, key: dict, meta: dict, arrays: dict[str, np.ndarray] | None = None) -> CacheEntry:
        """Store an entry and return it (read back from disk); in memory only when caching is disabled."""
        meta = {**meta, "created": time.time()}
        final = self.entry_dir(kind, key)
        if final is None:
            return CacheEntry(None, json.loads(json.dumps(key, default=str)), meta, dict(arrays or {}))
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.parent / f".tmp-{uuid.uuid4().hex}"
        tmp.mkdir()
        try:
            (tmp / "key.json").write_text(json.dumps(key, indent=1, sort_keys=True, default=str))
            for name, arr in (arrays or {}).items():
                np.save(tmp / f"{name}.npy", np.ascontiguousarray(arr))
            (tmp / "result.json").write_text(json.dumps(meta, indent=1))
            try:
                os.rename(tmp, final)
            except OSError:  # another writer got there first, or a stale entry without result.json
                if not (final / "result.json").exists():
                    shutil.rmtree(final, ignore_errors=True)
                    os.rename(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        entry = self.get(kind, key)
        if entry is None:
            raise RuntimeError(f"cache entry {final} could not be read back")
        return entry
