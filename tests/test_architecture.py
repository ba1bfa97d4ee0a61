"""The import layering of docs/ARCHITECTURE.md, checked on the source (every import statement, also
the ones inside functions): nothing imports upward.

    lnfree_core  never imports streamlit, pages, app or jobs; its floors (everything but the demo
                 plug-in, the CLI and __main__) never import lnfree_core.demo
    jobs         never imports streamlit, pages or app
    names        (the name-scheme registry) imports nothing of lnfree_core
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> set[str]:
    """Absolute names of every module `path` imports (relative imports resolved)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            out.add(mod)
            out.update(f"{mod}.{a.name}" for a in node.names)  # `from pkg import module`
    return out


def _files(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def _violations(files: list[Path], forbidden: tuple[str, ...]) -> list[str]:
    bad = []
    for f in files:
        for mod in imported_modules(f):
            if any(mod == p or mod.startswith(p + ".") for p in forbidden):
                bad.append(f"{f.relative_to(ROOT)} imports {mod}")
    return bad


def test_the_checker_sees_relative_and_function_local_imports(tmp_path):
    pkg = ROOT / "lnfree_core" / "data" / "registry.py"  # a real file: `from ..names import ...` at the top
    assert "lnfree_core.names.resolve_dataset_name" in imported_modules(pkg)
    local = ROOT / "lnfree_core" / "analysis" / "cache.py"  # `from ..models import ...` inside a function
    assert "lnfree_core.models" in imported_modules(local)


@pytest.mark.parametrize("package", ["lnfree_core", "jobs"])
def test_library_and_jobs_never_import_the_app(package):
    assert _violations(_files(package), ("streamlit", "pages", "app")) == []


def test_library_never_imports_jobs():
    assert _violations(_files("lnfree_core"), ("jobs",)) == []


def test_core_floors_never_import_the_demo_plugin():
    core = ROOT / "lnfree_core"
    floors = [f for f in _files("lnfree_core")
              if not f.is_relative_to(core / "demo") and not f.is_relative_to(core / "cli") and f.name != "__main__.py"]
    assert _violations(floors, ("lnfree_core.demo",)) == []


def test_the_name_registry_depends_on_nothing_of_lnfree():
    assert _violations([ROOT / "lnfree_core" / "names.py"], ("lnfree_core",)) == []
