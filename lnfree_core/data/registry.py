"""Named datasets of the paper, and local files/folders, resolved to a :class:`DatasetSpec`.

Known names (``list_datasets()``):

* ``owt`` -- OpenWebText, pre-tokenized with GPT-2 (``input_ids`` rows of 1024 tokens); the
  fine-tuning data. The Hub repo has only a ``train`` split, so a validation part is held out
  deterministically and cheaply (no pass over the data, works for a stream): the **first 4,400 rows
  (= sequences of 1024 tokens, 4,505,600 tokens ~ the paper's 4.5M) are split ``validation``**, and
  split ``train`` starts at row 4,400, so training never sees a validation token.
* ``pile`` -- The Pile (monology/pile-uncopyrighted), pre-tokenized with GPT-2. Split ``train`` is
  the whole Hub split; evaluation uses its first 10,000 sequences of 1024 tokens (Table 1).
* ``pile-filtered`` -- 10,000 Pile sequences without tokens absent from OpenWebText (appendix E);
  ``python -m lnfree_core data filter`` rebuilds such a set locally.

Local data: a ``.parquet``, ``.jsonl``/``.json`` or ``.txt`` file, or a folder. Rows carry either an
``input_ids`` column (token ids) or a ``text`` column (documents); a ``.txt`` file is one document.
Folder rule, first match wins:

1. ``dataset_dict.json`` (``DatasetDict.save_to_disk``): its splits;
2. ``state.json`` (``Dataset.save_to_disk``): one split, ``train``;
3. data files (``*.parquet``, ``*.jsonl``, ``*.txt``; ``*.json`` files are metadata and ignored)
   in the folder, or else in its ``data/`` subfolder, all of one format. A file whose name starts
   with a split name followed by ``.``, ``-`` or ``_`` belongs to that split (``train``,
   ``validation``, ``test``; ``val``/``valid``/``dev`` mean ``validation``), e.g. ``train.parquet``,
   ``validation-00000-of-00002.jsonl``; if no file is split-named, all files form ``train``; a folder
   mixing split-named and other data files is an error. Files of a split are read in name order.

A registry name wins over a same-named path: write ``./owt`` for a local folder called ``owt``.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field

import pyarrow.parquet as pq

from ..names import resolve_dataset_name

TOKENS_COLUMN = "input_ids"
TEXT_COLUMN = "text"
DATA_EXTENSIONS = {".parquet": "parquet", ".jsonl": "jsonl", ".txt": "txt"}
SINGLE_FILE_EXTENSIONS = {**DATA_EXTENSIONS, ".json": "jsonl"}
_SPLIT_ALIASES = {"train": "train", "validation": "validation", "valid": "validation", "val": "validation",
                  "dev": "validation", "test": "test"}
_SPLIT_FILE = re.compile(r"^(train|validation|valid|val|dev|test)(?:[-_.].*)?$", re.IGNORECASE)

OWT_VALIDATION_ROWS = 4_400


class DatasetNotFoundError(ValueError):
    """``resolve_dataset`` got neither a known name nor an existing path."""


@dataclass(frozen=True)
class SplitSpec:
    """One split: a row range of a Hub split, or a list of local files/folders.

    ``start``/``stop`` select rows ``[start, stop)`` of the Hub split (``stop=None``: to the end);
    a local split always uses all rows of its files.
    ``n_rows`` is the number of rows when known without reading the data.
    """

    name: str
    hub_split: str | None = None
    start: int = 0
    stop: int | None = None
    files: tuple[str, ...] = ()
    n_rows: int | None = None


@dataclass(frozen=True)
class DatasetSpec:
    """Everything needed to read a dataset.

    ``source`` is ``"hub"`` or ``"local"``; ``format`` is ``hub``, ``parquet``, ``jsonl``, ``txt`` or
    ``arrow`` (save_to_disk). ``column`` is ``input_ids`` (token rows) or ``text`` (documents).
    ``row_len``: every row has exactly this many tokens (Hub pre-tokenized sets), which lets a stream
    skip whole rows when resuming. ``eval_split``/``eval_sequences``: what evaluation reads by default.
    """

    name: str
    source: str
    format: str
    column: str
    splits: tuple[SplitSpec, ...]
    description: str
    size: str
    hub_id: str | None = None
    path: str | None = None
    row_len: int | None = None
    eval_split: str = "train"
    eval_sequences: int | None = None
    aliases: tuple[str, ...] = field(default=())

    @property
    def split_names(self) -> list[str]:
        """Names of the splits, in definition order."""
        return [s.name for s in self.splits]

    def split(self, name: str) -> SplitSpec:
        """The split called ``name`` (aliases like ``val`` accepted); ValueError listing the splits."""
        wanted = _SPLIT_ALIASES.get(name.lower(), name)
        for s in self.splits:
            if s.name == wanted:
                return s
        raise ValueError(f"dataset {self.name!r} has no split {name!r}; splits: {', '.join(self.split_names)}")


def _gpt2_token_rows(name: str, hub_id: str, splits: tuple[SplitSpec, ...], aliases: tuple[str, ...],
                     **fields) -> DatasetSpec:
    """A Hub dataset of the paper: GPT-2 token ids in rows of 1024 (`input_ids`), found by its Hub id too."""
    return DatasetSpec(name=name, source="hub", format="hub", column=TOKENS_COLUMN, hub_id=hub_id, splits=splits,
                       row_len=1024, aliases=(*aliases, hub_id), **fields)


KNOWN_DATASETS: dict[str, DatasetSpec] = {
    "owt": _gpt2_token_rows(
        "owt",
        "apollo-research/Skylion007-openwebtext-tokenizer-gpt2",
        splits=(
            SplitSpec("train", hub_split="train", start=OWT_VALIDATION_ROWS),
            SplitSpec("validation", hub_split="train", start=0, stop=OWT_VALIDATION_ROWS,
                      n_rows=OWT_VALIDATION_ROWS),
        ),
        eval_split="validation",
        description="OpenWebText (Skylion007) pre-tokenized with GPT-2: the fine-tuning data. "
                    "Validation = the first 4,400 rows of the Hub's train split; train = the rest.",
        size="~9B tokens in rows of 1024; validation 4,400 x 1024 = 4.5M tokens",
        aliases=("openwebtext",),
    ),
    "pile": _gpt2_token_rows(
        "pile",
        "apollo-research/monology-pile-uncopyrighted-tokenizer-gpt2",
        splits=(SplitSpec("train", hub_split="train"),),
        eval_split="train",
        eval_sequences=10_000,
        description="The Pile (monology/pile-uncopyrighted) pre-tokenized with GPT-2; evaluation "
                    "uses its first 10,000 sequences (Table 1).",
        size="evaluation: 10,000 x 1024 = 10.2M tokens (the Hub split is far larger)",
        aliases=("the-pile", "pile-apollo"),
    ),
    "pile-filtered": _gpt2_token_rows(
        "pile-filtered",
        "lucabaroni/apollo-pile-filtered-10k",
        splits=(SplitSpec("train", hub_split="train", n_rows=10_000),),
        eval_split="train",
        description="The Pile-filtered (appendix E): Pile sequences containing no token that is "
                    "absent from OpenWebText (control characters, tabs, ...).",
        size="10,000 x 1024 = 10.2M tokens",
        aliases=("pile_filtered", "pile-apollo-luca"),
    ),
}


def list_datasets() -> list[DatasetSpec]:
    """The named datasets, in registry order."""
    return list(KNOWN_DATASETS.values())


def _lookup_name(name: str) -> DatasetSpec | None:
    key = name.strip().lower()
    for spec in KNOWN_DATASETS.values():
        if key == spec.name or key in (a.lower() for a in spec.aliases):
            return spec
    return None


def _detect_column(fmt: str, files: list[str]) -> str:
    """Which of input_ids/text the data carries (cheap: schema or first record only)."""
    if fmt == "txt":
        return TEXT_COLUMN
    columns: list[str]
    if fmt == "parquet":
        columns = list(pq.read_schema(files[0]).names)
    elif fmt == "arrow":
        with open(os.path.join(files[0], "dataset_info.json"), encoding="utf-8") as f:
            columns = list((json.load(f).get("features") or {}).keys())
    else:  # jsonl
        columns = []
        with open(files[0], encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    columns = list(json.loads(line).keys())
                    break
    for col in (TOKENS_COLUMN, TEXT_COLUMN):
        if col in columns:
            return col
    raise ValueError(f"{files[0]}: no '{TOKENS_COLUMN}' or '{TEXT_COLUMN}' column (columns: {columns})")


def _parquet_rows(files: tuple[str, ...]) -> int | None:
    return sum(pq.ParquetFile(f).metadata.num_rows for f in files)


def _data_files(folder: str) -> list[str]:
    return sorted(
        os.path.join(folder, n) for n in os.listdir(folder)
        if os.path.isfile(os.path.join(folder, n)) and os.path.splitext(n)[1].lower() in DATA_EXTENSIONS
    )


def _folder_splits(folder: str) -> tuple[str, list[SplitSpec]]:
    """(format, splits) of a local folder, following the rule in the module docstring."""
    if os.path.isfile(os.path.join(folder, "dataset_dict.json")):
        with open(os.path.join(folder, "dataset_dict.json"), encoding="utf-8") as f:
            names = json.load(f)["splits"]
        return "arrow", [SplitSpec(n, files=(os.path.join(folder, n),)) for n in names]
    if os.path.isfile(os.path.join(folder, "state.json")):
        return "arrow", [SplitSpec("train", files=(folder,))]
    files = _data_files(folder)
    if not files and os.path.isdir(os.path.join(folder, "data")):
        files = _data_files(os.path.join(folder, "data"))
    if not files:
        raise ValueError(f"{folder}: no data files (*.parquet, *.jsonl, *.txt) and no save_to_disk dataset")
    formats = {DATA_EXTENSIONS[os.path.splitext(f)[1].lower()] for f in files}
    if len(formats) > 1:
        raise ValueError(f"{folder}: data files of several formats ({', '.join(sorted(formats))}); keep one")
    by_split: dict[str, list[str]] = {}
    others = []
    for f in files:
        m = _SPLIT_FILE.match(os.path.basename(f))
        if m:
            by_split.setdefault(_SPLIT_ALIASES[m.group(1).lower()], []).append(f)
        else:
            others.append(f)
    if by_split and others:
        raise ValueError(f"{folder}: mixes split files (train.*, validation.*, test.*) with other data "
                         f"files ({', '.join(os.path.basename(o) for o in others)}); rename or move them")
    if not by_split:
        by_split = {"train": others}
    order = [s for s in ("train", "validation", "test") if s in by_split]
    return formats.pop(), [SplitSpec(s, files=tuple(by_split[s])) for s in order]


def _local_spec(path: str) -> DatasetSpec:
    path = os.path.abspath(path)
    if os.path.isdir(path):
        fmt, splits = _folder_splits(path)
    else:
        ext = os.path.splitext(path)[1].lower()
        if ext not in SINGLE_FILE_EXTENSIONS:
            raise ValueError(f"{path}: unsupported file type {ext!r} (use .parquet, .jsonl, .json or .txt)")
        fmt, splits = SINGLE_FILE_EXTENSIONS[ext], [SplitSpec("train", files=(path,))]
    column = _detect_column(fmt, list(splits[0].files))
    if fmt == "parquet":
        splits = [SplitSpec(s.name, files=s.files, n_rows=_parquet_rows(s.files)) for s in splits]
    elif fmt == "txt":
        splits = [SplitSpec(s.name, files=s.files, n_rows=len(s.files)) for s in splits]
    names = [s.name for s in splits]
    eval_split = next((s for s in ("validation", "test") if s in names), names[0])
    return DatasetSpec(
        name=os.path.basename(path.rstrip(os.sep)) or path,
        source="local",
        format=fmt,
        column=column,
        splits=tuple(splits),
        description=_local_description(path, fmt, column),
        size="",
        path=path,
        eval_split=eval_split,
    )


def _local_description(path: str, fmt: str, column: str) -> str:
    report = os.path.join(path, "filter_report.json") if os.path.isdir(path) else ""
    if report and os.path.isfile(report):
        with open(report, encoding="utf-8") as f:
            r = json.load(f)
        return (f"Filtered by `lnfree data filter`: {r.get('kept_sequences')} of {r.get('target_sequences')} "
                f"sequences of {r.get('target')} without the {len(r.get('removed_tokens', []))} tokens "
                f"absent from {r.get('reference')}")
    kind = "token ids" if column == TOKENS_COLUMN else "text documents"
    return f"local {fmt} data ({kind})"


def _plugin_dataset(text: str) -> DatasetSpec | None:
    """A dataset a plug-in names (the demo suite: `pile-demo` or `demo:pile-demo`), see lnfree_core.names."""
    try:
        path = resolve_dataset_name(text)
    except FileNotFoundError as e:  # a plug-in's name whose data is not built
        raise DatasetNotFoundError(str(e)) from None
    return None if path is None else _local_spec(str(path))


def resolve_dataset(name_or_path: str | os.PathLike | DatasetSpec) -> DatasetSpec:
    """A registry name (or alias / Hub id of a registry entry), or an existing local path, as a spec.

    Raises :class:`DatasetNotFoundError` listing the known names for anything else.
    """
    if isinstance(name_or_path, DatasetSpec):
        return name_or_path
    text = os.fspath(name_or_path)
    spec = _lookup_name(text)
    if spec is not None:
        return spec
    path = os.path.expanduser(text)
    if os.path.exists(path):
        return _local_spec(path)
    named = _plugin_dataset(text)
    if named is not None:
        return named
    known = ", ".join(s.name for s in list_datasets())
    raise DatasetNotFoundError(
        f"unknown dataset {text!r}: not a known name ({known}) and no such file or folder. Pass a known "
        f"name or a path to a .parquet/.jsonl/.txt file or a folder of them (or a save_to_disk folder)."
    )
