"""The demo suite's two text corpora, taken from what every Python installation holds offline.

**OWT-like (training) corpus: the standard library's documentation.** One document per module of
the "prose" part of the standard library: its module docstring, then every class and function
docstring in source order, each under a short heading (``class Name(Bases)`` or
``Name.method(args)``), like an API reference page; plus one document per topic of
``pydoc_data.topics`` (the language reference prose that ``help()`` shows). This reads like the
technical web pages that make up much of OpenWebText: English prose with inline code, lists and
examples. Docstrings are read from the source with ``ast`` (never by importing the modules: no side
effects such as ``antigravity`` opening a browser, no platform-dependent import failures) and cleaned
with ``inspect.cleandoc`` exactly as ``inspect.getdoc``/``pydoc`` would; cleaning expands tabs, so
this corpus has no tab token (``\\t`` = 197 in GPT-2), like OpenWebText.

**Pile-like (evaluation) corpus: the standard library's files as shipped.** The verbatim source
files of the "code" modules (a fixed 1 in ``CODE_EVERY`` of the modules, never used for the prose
corpus, so no docstring is both trained on and evaluated on) and the other text files under the
standard library directory (the build ``Makefile`` and ``Setup`` with their tabs, grammar files,
IDLE's help and ChangeLog, the e-mail messages, XML, TOML and decimal test data with their tabs and
form feeds, ``\\x0c`` = 200). Like The Pile next to OpenWebText it mixes code, mail and data with
prose, and carries tokens the training corpus never shows: the point of the Pile-filtered set.
Each document is cut to its first ``MAX_DOC_CHARS`` characters (at a line end) so that a few large
files do not dominate, and documents are taken in a fixed pseudo-random order (by SHA-1 of their
path) so that any prefix of the corpus mixes all kinds.

**Determinism.** Files are listed in sorted order, partitioned by their index in that order, and
read as UTF-8 bytes; the same Python installation gives byte-identical corpora (the build records
their SHA-256). Caveat: the corpora depend on the Python version and on how it was installed (a
Debian ``python3`` ships the ``test/`` package and ``config-*/`` directory separately, so it has
fewer Pile-like data files and fewer tabs); the build records the version and file counts.
Excluded everywhere: ``site-packages``/``dist-packages`` (installed packages are not the standard
library), ``__pycache__``, ``lib-dynload`` (binaries) and, for prose, test packages.
"""

from __future__ import annotations

import ast
import hashlib
import inspect
import os
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from pydoc_data.topics import topics

CODE_EVERY = 8  # module i (sorted order) is a "code" module when i % CODE_EVERY == CODE_EVERY - 1
MAX_DOC_CHARS = 12_000
MAX_DATA_FILE_BYTES = 512_000
_SKIP_DIRS = {"site-packages", "dist-packages", "__pycache__", "lib-dynload"}
_TEST_DIRS = {"test", "tests", "idle_test"}


@dataclass
class Document:
    """One document of a corpus: ``source`` says where it came from (a path relative to the stdlib)."""

    source: str
    text: str


def stdlib_dir() -> Path:
    """The standard library directory of the running Python."""
    return Path(sysconfig.get_paths()["stdlib"])


def _walk(root: Path) -> list[Path]:
    """Every file under ``root``, sorted by relative path, skipping _SKIP_DIRS."""
    out = []
    for d, dirs, names in os.walk(root):
        dirs[:] = sorted(x for x in dirs if x not in _SKIP_DIRS)
        out.extend(Path(d) / n for n in names)
    return sorted(out, key=lambda p: p.relative_to(root).as_posix())


def _is_test(rel: Path) -> bool:
    return any(part in _TEST_DIRS for part in rel.parts[:-1]) or rel.name.startswith("test_")


def split_files(root: Path | None = None) -> tuple[list[Path], list[Path], list[Path]]:
    """(prose modules, code modules, other text-file candidates) of the stdlib, each sorted.

    Modules are the non-test ``.py`` files; module i of the sorted list is a code module when
    ``i % CODE_EVERY == CODE_EVERY - 1``. The rest of the files (tests included) are candidates for
    the Pile-like data files.
    """
    root = root or stdlib_dir()
    files = _walk(root)
    modules = [f for f in files if f.suffix == ".py" and not _is_test(f.relative_to(root))]
    prose = [m for i, m in enumerate(modules) if i % CODE_EVERY != CODE_EVERY - 1]
    code = [m for i, m in enumerate(modules) if i % CODE_EVERY == CODE_EVERY - 1]
    others = [f for f in files if f.suffix not in (".py", ".pyc")]
    return prose, code, others


def _heading(node: ast.AST, prefix: str) -> str:
    if isinstance(node, ast.ClassDef):
        bases = ", ".join(ast.unparse(b) for b in node.bases)
        return f"class {prefix}{node.name}" + (f"({bases})" if bases else "")
    return f"{prefix}{node.name}({ast.unparse(node.args)})"


def _docstrings(body: list[ast.stmt], prefix: str) -> list[str]:
    """Headed docstrings of the classes and functions in ``body`` (recursively), in source order."""
    out = []
    for node in body:
        if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node, clean=True)  # inspect.cleandoc, as inspect.getdoc does
            if doc:
                out.append(f"{_heading(node, prefix)}\n{doc}")
            if isinstance(node, ast.ClassDef):
                out.extend(_docstrings(node.body, f"{prefix}{node.name}."))
    return out


def module_name(path: Path, root: Path) -> str:
    """``email/mime/text.py`` -> ``email.mime.text``; ``json/__init__.py`` -> ``json``."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def module_document(path: Path, root: Path) -> Document | None:
    """The documentation page of one module (None if it has no docstrings or does not parse)."""
    try:
        tree = ast.parse(path.read_bytes().decode("utf-8"))
    except (SyntaxError, UnicodeDecodeError, ValueError):
        return None
    parts = []
    mod_doc = ast.get_docstring(tree, clean=True)
    if mod_doc:
        parts.append(mod_doc)
    parts.extend(_docstrings(tree.body, ""))
    if not parts:
        return None
    name = module_name(path, root)
    return Document(path.relative_to(root).as_posix(), f"{name}\n\n" + "\n\n".join(parts))


def topic_documents() -> list[Document]:
    """The language-reference topics of ``pydoc_data.topics`` (what ``help('if')`` prints), sorted."""
    return [Document(f"pydoc_data/topics#{k}", inspect.cleandoc(topics[k])) for k in sorted(topics)]


def _truncate(text: str, limit: int | None = None) -> str:
    """The first ``limit`` (default MAX_DOC_CHARS) characters of ``text``, cut after a line end."""
    limit = MAX_DOC_CHARS if limit is None else limit
    if len(text) <= limit:
        return text
    cut = text.rfind("\n", 0, limit)
    return text[:cut + 1] if cut > 0 else text[:limit]


def _read_text_file(path: Path) -> str | None:
    """The file as UTF-8 text, or None for binaries (NUL bytes, not UTF-8) and oversized files."""
    if path.stat().st_size > MAX_DATA_FILE_BYTES:
        return None
    data = path.read_bytes()
    if not data or b"\x00" in data:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _sha1(source: str) -> str:
    return hashlib.sha1(source.encode("utf-8")).hexdigest()


def prose_documents(root: Path | None = None) -> Iterator[Document]:
    """The OWT-like corpus, lazily, in its fixed order (SHA-1 of the source name).

    Module pages and language-reference topics are interleaved by that order, so any prefix of
    the corpus is a sample of the whole; a module is parsed only when its turn comes.
    """
    root = root or stdlib_dir()
    prose_files, _, _ = split_files(root)
    pool: list[tuple[str, Path | Document]] = [(_sha1(f.relative_to(root).as_posix()), f) for f in prose_files]
    pool += [(_sha1(d.source), d) for d in topic_documents()]
    for _, item in sorted(pool, key=lambda t: t[0]):
        doc = item if isinstance(item, Document) else module_document(item, root)
        if doc is not None:
            yield doc


def pile_documents(root: Path | None = None) -> Iterator[Document]:
    """The Pile-like corpus, lazily, in its fixed order (SHA-1 of the path): code modules and data files."""
    root = root or stdlib_dir()
    _, code_files, others = split_files(root)
    pool = sorted(code_files + others, key=lambda f: _sha1(f.relative_to(root).as_posix()))
    code = set(code_files)
    for f in pool:
        text = f.read_bytes().decode("utf-8", errors="replace") if f in code else _read_text_file(f)
        if text and text.strip():
            yield Document(f.relative_to(root).as_posix(), _truncate(text))


def describe_source(root: Path | None = None) -> dict:
    """Which Python and standard library the corpora come from, and how many files each part has."""
    root = root or stdlib_dir()
    prose_files, code_files, others = split_files(root)
    return {
        "python": sys.version.split()[0],
        "implementation": sys.implementation.name,
        "stdlib_dir": str(root),
        "prose_modules": len(prose_files),
        "topics": len(topic_documents()),
        "code_modules": len(code_files),
        "other_files": len(others),
    }
