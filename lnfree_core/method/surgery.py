"""Model surgery and FakeLN state, independent of the model family (see adapters/ for the family part)."""

from __future__ import annotations

from torch import nn

from .adapters import adapter_for
from .fakeln import FakeLayerNorm

BLOCK_KINDS = ("mlp", "qk", "v", "f")


def block_name(block: str, layer: int | None) -> str:
    """("mlp", 3) -> "mlp.3"; ("f", None) -> "f"."""
    if block == "f":
        return "f"
    if block not in BLOCK_KINDS:
        raise ValueError(f"unknown LN block kind {block!r}; expected one of {BLOCK_KINDS}")
    return f"{block}.{layer}"


def make_removable(model: nn.Module) -> dict[str, FakeLayerNorm]:
    """Replace every LayerNorm of `model` by a live FakeLN block (in place, idempotent)."""
    return adapter_for(model).install(model)


def fakeln_modules(model: nn.Module) -> dict[str, FakeLayerNorm]:
    return adapter_for(model).fakeln_modules(model)


def live_blocks(model: nn.Module) -> list[str]:
    return [n for n, m in fakeln_modules(model).items() if not m.is_removed]


def is_ln_free(model: nn.Module) -> bool:
    """True when the model has FakeLN blocks and every one of them is removed."""
    mods = fakeln_modules(model)
    return bool(mods) and all(m.is_removed for m in mods.values())


def fakeln_state(model: nn.Module) -> dict[str, dict]:
    """JSON-able state of every FakeLN block: removed, sigma_bar, tracked sigma_avg."""
    return {
        name: {
            "removed": m.is_removed,
            "sigma": float(m.sigma),
            "sigma_avg": float(m.sigma_avg),
            "sigma_avg_valid": bool(m.sigma_avg_valid),
            "eps": m.eps,
        }
        for name, m in fakeln_modules(model).items()
    }


def load_fakeln_state(model: nn.Module, state: dict[str, dict]) -> None:
    """Restore `fakeln_state` output onto a model with installed FakeLN blocks (names must match)."""
    mods = fakeln_modules(model)
    missing = sorted(set(mods) ^ set(state))
    if missing:
        raise ValueError(f"FakeLN state does not match the model's blocks; differing names: {missing[:6]}")
    for name, st in state.items():
        m = mods[name]
        m.sigma_avg.fill_(st["sigma_avg"])
        m.sigma_avg_valid.fill_(bool(st["sigma_avg_valid"]))
        m.sigma.fill_(st["sigma"])
        m.removed.fill_(bool(st["removed"]))
        m.sync_flags()


def remove_block(model: nn.Module, name: str, sigma: float | None = None) -> float:
    """Freeze one block (sigma_bar := tracked sigma_avg unless given), and the family's companion
    blocks of it (each at its own tracked sigma_avg; Qwen3's q_norm/k_norm with LN_qk). Returns the
    block's sigma_bar."""
    mods = fakeln_modules(model)
    if name not in mods:
        raise KeyError(f"no FakeLN block {name!r} in this model; it has {list(mods)[:4]}...")
    out = mods[name].remove(sigma)
    for other in adapter_for(model).companions(name):
        if other in mods and not mods[other].is_removed:
            mods[other].remove()
    return out
