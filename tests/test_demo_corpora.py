"""The demo corpora (lnfree_core.demo.corpora) on a small made-up standard library, and on the real one."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from lnfree_core.demo import corpora
from lnfree_core.demo.corpora import (CODE_EVERY, describe_source, module_document, pile_documents,
                                      prose_documents, split_files)

MODULE = '''"""Tools for\tparsing widgets.

A widget is a small thing.
"""


class Widget(Base):
    """A widget.

    It holds a value.
    """

    def spin(self, times=1):
        """Spin the widget ``times`` times."""
        return times


def helper():
    return 1
'''


def _fake_stdlib(root: Path) -> Path:
    """8 modules (module 7 is the code one), a test package, a package, data files and a binary."""
    for i in range(8):
        (root / f"mod{i}.py").write_text(MODULE.replace("widgets", f"widgets{i}"))
    (root / "pkg").mkdir()
    (root / "pkg" / "__init__.py").write_text('"""The package."""\n')
    (root / "test").mkdir()
    (root / "test" / "test_mod0.py").write_text('"""Tests that must not be prose."""\n')
    (root / "test" / "msg_01.txt").write_text("From: a\nSubject: b\n\tcontinued\n")
    (root / "Makefile").write_text("all:\n\techo hi\n\x0c\n")
    (root / "blob.bin").write_bytes(b"\x00\x01\x02")
    (root / "site-packages").mkdir()
    (root / "site-packages" / "other.py").write_text('"""Not the standard library."""\n')
    (root / "__pycache__").mkdir()
    (root / "__pycache__" / "mod0.cpython-311.pyc").write_bytes(b"\x00")
    return root


def test_files_are_split_into_prose_code_and_data(tmp_path):
    root = _fake_stdlib(tmp_path)
    prose, code, others = split_files(root)
    names = lambda ps: [p.relative_to(root).as_posix() for p in ps]  # noqa: E731
    modules = ["mod0.py", "mod1.py", "mod2.py", "mod3.py", "mod4.py", "mod5.py", "mod6.py", "mod7.py",
               "pkg/__init__.py"]
    assert names(code) == [modules[CODE_EVERY - 1]]
    assert names(prose) == [m for m in modules if m != modules[CODE_EVERY - 1]]
    assert names(others) == ["Makefile", "blob.bin", "test/msg_01.txt"]  # no test module, no site-packages


def test_module_document_reads_like_documentation(tmp_path):
    root = _fake_stdlib(tmp_path)
    doc = module_document(root / "mod0.py", root)
    assert doc.source == "mod0.py"
    assert doc.text.startswith("mod0\n\nTools for")
    assert "class Widget(Base)\nA widget.\n\nIt holds a value." in doc.text
    assert "Widget.spin(self, times=1)\nSpin the widget ``times`` times." in doc.text
    assert "helper" not in doc.text  # no docstring, no entry
    assert "\t" not in doc.text  # cleaned like inspect.getdoc: tabs expanded
    assert module_document(root / "pkg" / "__init__.py", root).text == "pkg\n\nThe package."


def test_corpora_are_deterministic_and_keep_raw_bytes_in_the_pile(tmp_path):
    root = _fake_stdlib(tmp_path)
    prose = list(prose_documents(root))
    assert [d.source for d in prose] == [d.source for d in prose_documents(root)]
    sources = {d.source for d in prose}
    assert "mod7.py" not in sources and "test/test_mod0.py" not in sources
    assert any(s.startswith("pydoc_data/topics#") for s in sources)  # the language reference topics
    assert all("\t" not in d.text for d in prose)
    pile = list(pile_documents(root))
    assert [d.source for d in pile] == [d.source for d in pile_documents(root)]
    assert sorted(d.source for d in pile) == ["Makefile", "mod7.py", "test/msg_01.txt"]  # the binary is skipped
    by_source = {d.source: d.text for d in pile}
    assert by_source["Makefile"] == "all:\n\techo hi\n\x0c\n"
    assert "Tools for\tparsing" in by_source["mod7.py"]  # verbatim source
    info = describe_source(root)
    assert (info["prose_modules"], info["code_modules"], info["other_files"]) == (8, 1, 3)


def test_long_documents_are_cut_at_a_line_end(tmp_path, monkeypatch):
    root = _fake_stdlib(tmp_path)
    (root / "Makefile").write_text("".join(f"line {i}\n" for i in range(100)))
    monkeypatch.setattr(corpora, "MAX_DOC_CHARS", 50)
    text = {d.source: d.text for d in pile_documents(root)}["Makefile"]
    assert len(text) <= 50 and text.endswith("\n") and text.startswith("line 0\n")


def test_real_stdlib_gives_prose_without_tabs():
    docs = list(itertools.islice(prose_documents(), 40))
    assert len(docs) == 40
    assert sum(len(d.text) for d in docs) > 20_000
    assert all("\t" not in d.text for d in docs)
    info = describe_source()
    assert info["prose_modules"] > 300 and info["code_modules"] > 30


@pytest.mark.parametrize("n", [5])
def test_real_pile_prefix_is_stable(n):
    first = [d.source for d in itertools.islice(pile_documents(), n)]
    assert first == [d.source for d in itertools.islice(pile_documents(), n)]
    assert len(set(first)) == n
