"""Where the demo suite lives on disk, and the names of its models and datasets.

The demo root is always a function argument: an explicit path, else ``./lnfree_home/demo``
relative to the current directory (``DEFAULT_RELATIVE_ROOT``). There is no environment variable
or other hidden setting; the app and the CLI pass their own root when they have one.

Layout under the root::

    datasets/owt-demo/            train.parquet, validation.parquet  (OWT-like, compact ids)
    datasets/pile-demo/           train.parquet                      (Pile-like, compact ids)
    datasets/pile-filtered-demo/  train.parquet, tokens_removed.json, filter_report.json
    models/original/              the pretrained GPT-2 (with LayerNorm), Hugging Face folder
    models/vanilla/               export of the vanilla fine-tune (LNs live)
    models/ln-free/               export of the LN-removal fine-tune (LN-free)
    runs/original|vanilla|ln-free/  the trainer's run directories (metrics, checkpoints)
    work/init/                    the freshly initialised model the pretraining started from
    stages/<stage>.json           one marker per finished build stage
    summary.json                  the build's summary numbers
    vocab_map.json                compact id -> GPT-2 id (also in every dataset and model folder)
"""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_RELATIVE_ROOT = Path("lnfree_home") / "demo"
MODEL_NAMES = ("original", "vanilla", "ln-free")
DATASET_NAMES = ("owt-demo", "pile-demo", "pile-filtered-demo")
BUILD_HINT = "python -m lnfree_core demo build"


def demo_root(root: str | os.PathLike | None = None) -> Path:
    """The demo root: ``root`` if given, else ``./lnfree_home/demo`` under the current directory (absolute)."""
    return Path(root).expanduser().resolve() if root is not None else (Path.cwd() / DEFAULT_RELATIVE_ROOT).resolve()


def _check(name: str, names: tuple[str, ...], kind: str) -> str:
    if name not in names:
        raise ValueError(f"unknown demo {kind} {name!r}; known: {', '.join(names)}")
    return name


def demo_model_path(name: str, root: str | os.PathLike | None = None, *, must_exist: bool = True) -> Path:
    """The Hugging Face folder of demo model ``name`` (``original``, ``vanilla``, ``ln-free``).

    ``must_exist``: raise FileNotFoundError (saying how to build it) when it has not been built, so
    that ``load_model("demo:NAME")`` never mistakes a missing folder for a Hub id.
    """
    path = demo_root(root) / "models" / _check(name, MODEL_NAMES, "model")
    if must_exist and not (path / "config.json").is_file():
        raise FileNotFoundError(f"demo model {name!r} is not built at {path}; build the demo suite: {BUILD_HINT}")
    return path


def demo_run_path(name: str, root: str | os.PathLike | None = None) -> Path:
    """The run directory (metrics, checkpoints) that trained demo model ``name``."""
    return demo_root(root) / "runs" / _check(name, MODEL_NAMES, "model")


def demo_dataset_path(name: str, root: str | os.PathLike | None = None, *, must_exist: bool = False) -> Path:
    """The folder of demo dataset ``name`` (``owt-demo``, ``pile-demo``, ``pile-filtered-demo``).

    It is a local dataset folder that ``resolve_dataset``/``iter_sequences`` read directly.
    """
    path = demo_root(root) / "datasets" / _check(name, DATASET_NAMES, "dataset")
    if must_exist and not (path / "train.parquet").is_file():
        raise FileNotFoundError(f"demo dataset {name!r} is not built at {path}; build the demo suite: {BUILD_HINT}")
    return path


def init_model_path(root: str | os.PathLike | None = None) -> Path:
    """The freshly initialised model the pretraining started from."""
    return demo_root(root) / "work" / "init"


def stage_marker_path(stage: str, root: str | os.PathLike | None = None) -> Path:
    """The marker written when build stage ``stage`` has finished."""
    return demo_root(root) / "stages" / f"{stage}.json"


def summary_path(root: str | os.PathLike | None = None) -> Path:
    return demo_root(root) / "summary.json"


def resolve_demo_dataset(text: str) -> Path | None:
    """The folder of a demo dataset named ``pile-demo`` or ``demo:pile-demo`` (None for other names),
    for the core's dataset-name registry. Raises FileNotFoundError (saying how to build it) when the
    name is a demo dataset that has not been built."""
    name = text[len("demo:"):] if text.startswith("demo:") else text
    if name not in DATASET_NAMES:
        return None
    path = demo_dataset_path(name)
    if not path.is_dir():
        raise FileNotFoundError(
            f"demo dataset {name!r} is not built at {path}; build it with `{BUILD_HINT}` "
            "(run from this folder), or pass the dataset folder's path"
        )
    return path
