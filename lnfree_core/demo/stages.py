"""Build stages that are reused once finished and redone when half-built.

A stage is finished when its marker ``stages/<name>.json`` exists, records the stage's key, and
every output path the marker lists still exists. The key hashes the stage's parameters and the key
of the stage before it, so changing a size setting (or rebuilding an earlier stage) redoes this
stage and everything after it. Before a stage runs, its outputs are deleted: a stage interrupted
half-way (no marker) starts over from a clean slate. Markers are written atomically, last.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from .paths import stage_marker_path

# The build's stages, in order (what each does: lnfree_core.demo.build).
STAGES = ("datasets", "filter", "init", "pretrain", "vanilla", "ln-free", "evaluate")


def stage_key(name: str, params: dict, previous_key: str | None) -> str:
    """Hash of a stage's name, parameters (JSON-able) and the previous stage's key."""
    blob = json.dumps({"stage": name, "params": params, "previous": previous_key}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


@dataclass
class Stage:
    """One build stage under ``root``: its name, key and the paths it produces."""

    root: Path
    name: str
    key: str
    outputs: list[Path] = field(default_factory=list)

    @property
    def marker(self) -> Path:
        return stage_marker_path(self.name, self.root)

    def load(self) -> dict | None:
        """The marker's record if the stage is finished with this key and every output it made exists, else None.

        The outputs checked are those the marker lists: the ones that existed when the stage finished (the
        pretrain stage makes no run directory when it installs the shipped original)."""
        try:
            rec = json.loads(self.marker.read_text())
        except (OSError, ValueError):
            return None
        if rec.get("key") != self.key or not all(Path(p).exists() for p in rec.get("outputs", self.outputs)):
            return None
        return rec

    def clear(self) -> None:
        """Delete the marker and every output (a redo starts from nothing)."""
        self.marker.unlink(missing_ok=True)
        for p in self.outputs:
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            elif p.exists() or p.is_symlink():
                p.unlink()

    def finish(self, result: dict, seconds: float) -> dict:
        """Write the marker (atomically) with the stage's result; returns the record."""
        rec = {"stage": self.name, "key": self.key, "finished": time.time(), "seconds": round(seconds, 3),
               "outputs": [str(p) for p in self.outputs if p.exists()], "result": result}
        self.marker.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.marker.with_name(f".{self.marker.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(rec, indent=1))
        os.replace(tmp, self.marker)
        return rec
