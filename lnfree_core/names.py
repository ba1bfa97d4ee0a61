"""Name schemes: model specs like ``demo:original`` and dataset names like ``pile-demo`` that a
plug-in resolves to folders on disk.

The core knows no plug-in by name. A plug-in registers its resolvers when it is imported (the demo
suite, :mod:`lnfree_core.demo`, registers the ``demo:`` model scheme and its dataset names); the entry
points (``python -m lnfree_core``, the app, the jobs runner) import the plug-ins they ship. A library
user who wants ``demo:`` names imports :mod:`lnfree_core.demo` once.

    register_model_scheme("demo", resolve)     resolve("original", must_exist=True) -> Path
    register_dataset_names(resolve)            resolve("pile-demo") -> Path, or None if not its name

A spec ``SCHEME:NAME`` whose scheme nobody registered fails with a message saying so (never
mistaken for a Hub id or a path).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Callable, Protocol


class ModelResolver(Protocol):
    def __call__(self, name: str, *, must_exist: bool = True) -> Path: ...


_SCHEME_RE = re.compile(r"^([a-z][a-z0-9_-]*):(?!//)(.+)$")
_MODEL_SCHEMES: dict[str, ModelResolver] = {}
_DATASET_RESOLVERS: list[Callable[[str], Path | None]] = []


class UnknownSchemeError(ValueError):
    """A ``SCHEME:NAME`` spec whose scheme no imported plug-in registered."""


def register_model_scheme(scheme: str, resolver: ModelResolver) -> None:
    """Make ``scheme:NAME`` model specs resolve through ``resolver(NAME, must_exist=...)``."""
    _MODEL_SCHEMES[scheme] = resolver


def register_dataset_names(resolver: Callable[[str], Path | None]) -> None:
    """Add a dataset-name resolver: NAME (or ``scheme:NAME``) -> folder, or None if not its name."""
    if resolver not in _DATASET_RESOLVERS:
        _DATASET_RESOLVERS.append(resolver)


def split_scheme(spec: str) -> tuple[str, str] | None:
    """("demo", "original") for "demo:original"; None for a Hub id, path or URL (no ``scheme:``)."""
    m = _SCHEME_RE.match(spec) if isinstance(spec, str) else None
    if m is None or Path(spec).exists():  # a local folder named like "run:1" stays a path
        return None
    return m.group(1), m.group(2)


def is_scheme_spec(spec: str) -> bool:
    return split_scheme(spec) is not None


def resolve_model_name(spec: str, *, must_exist: bool = True) -> Path:
    """The folder behind a ``scheme:NAME`` model spec. Raises UnknownSchemeError for an unregistered
    scheme, and what the resolver raises (FileNotFoundError, ValueError) for an unknown or unbuilt name."""
    parts = split_scheme(spec)
    if parts is None:
        raise ValueError(f"{spec!r} is not a SCHEME:NAME model spec")
    scheme, name = parts
    resolver = _MODEL_SCHEMES.get(scheme)
    if resolver is None:
        known = ", ".join(f"{s}:" for s in sorted(_MODEL_SCHEMES)) or "none"
        raise UnknownSchemeError(
            f"model {spec!r}: no plug-in registered the name scheme {scheme + ':'!r} (registered: {known}). "
            f"For demo: names, import lnfree_core.demo first (python -m lnfree_core and the app do)."
        )
    return resolver(name, must_exist=must_exist)


def resolve_dataset_name(name: str) -> Path | None:
    """The folder a registered plug-in gives dataset ``name``; None if no plug-in knows the name."""
    for resolver in _DATASET_RESOLVERS:
        path = resolver(name)
        if path is not None:
            return path
    return None
