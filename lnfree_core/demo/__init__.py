"""The demo suite: small offline GPT-2 models and datasets built from the Python standard library.

``python -m lnfree_core demo build`` (or :func:`build_demo`) makes, with no download:

* datasets ``owt-demo`` (OWT-like: stdlib documentation; train/validation), ``pile-demo`` (Pile-like:
  stdlib source and data files) and ``pile-filtered-demo`` (the Pile-filtered analogue), in a
  compact vocabulary with ``vocab_map.json`` (compact id -> GPT-2 id);
* models ``demo:original`` (pretrained from scratch, with LayerNorm), ``demo:vanilla`` (fine-tuned
  control) and ``demo:ln-free`` (fine-tuned with LN removal, exported), all loadable by
  ``lnfree_core.models.load_model``.

API: :func:`build_demo`, :func:`demo_status` (also ``status``), :func:`demo_model_path`,
:func:`demo_dataset_path`, :func:`demo_run_path`, :func:`demo_root`; the paper's sinks, first-token
norms and confidence neurons measured on the built models: :mod:`.findings` (``demo findings``). Everything takes the demo root
as an argument (default ``./lnfree_home/demo``). Importing this package does not import torch;
:func:`build_demo` imports it when called.
"""

from __future__ import annotations

from ..names import register_dataset_names, register_model_scheme
from .paths import (DATASET_NAMES, DEFAULT_RELATIVE_ROOT, MODEL_NAMES, demo_dataset_path, demo_model_path,
                    demo_root, demo_run_path, resolve_demo_dataset)
from .sizes import SIZES, DemoSize, get_size
from .status import demo_status, format_status

status = demo_status  # what the app calls: status(root=None) -> dict

# The plug-in: `demo:NAME` model specs and the demo dataset names resolve through the core's registry.
register_model_scheme("demo", demo_model_path)
register_dataset_names(resolve_demo_dataset)

__all__ = [
    "DATASET_NAMES", "DEFAULT_RELATIVE_ROOT", "MODEL_NAMES", "SIZES", "DemoBuildCancelled", "DemoBuildError",
    "DemoSize", "build_demo", "demo_dataset_path", "demo_model_path", "demo_root", "demo_run_path", "demo_status",
    "format_status", "get_size", "status",
]


def __getattr__(name: str):
    """``build_demo`` and its exceptions are imported on first use (they need torch)."""
    if name in ("build_demo", "DemoBuildError", "DemoBuildCancelled"):
        from . import build  # local: build imports torch and transformers (~5.8 s CPU); the package stays torch-free for demo_status (tested)

        return getattr(build, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
