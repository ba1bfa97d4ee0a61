"""The import layering of docs/ARCHITECTURE.md, checked on the source (every import statement, also
the ones inside functions): nothing imports upward.

    lnfree_core  never imports streamlit, pages, app or jobs; its floors (everything but the demo
                 plug-in, the CLI and __main__) never import lnfree_core.demo
    jobs         never imports streamlit, pages or app
    names        (the name-scheme registry) imports nothing of lnfree_core

and that every import inside a function body says why it is not at the top of its module: a comment
starting `# local` on its line or the line above, naming a measured start-up cost or an import cycle.
"""

from __future__ import annotations

import ast
import re
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


# ------------------------------------------------------------------ function-local imports
LOCAL_REASON = re.compile(r"#\s*local( import)?:")  # `# local: <reason>` or `# local import: <cycle>`
LOCAL_IMPORT_PACKAGES = ("lnfree_core", "jobs", "bench")
LOCAL_IMPORT_EXCLUDED: tuple[str, ...] = ()  # paths (prefixes) not checked; none: every module says why


def unexplained_local_imports(path: Path) -> list[int]:
    """Lines of the import statements inside a function body (methods and nested functions included)
    with no `# local: ...` comment on their first line or the line above; the comment above a run of
    consecutive import lines covers the whole run."""
    source = path.read_text(encoding="utf-8")
    lines = source.splitlines()
    bad: list[int] = []

    def explained(line: int) -> bool:  # 1-based
        return line >= 1 and bool(LOCAL_REASON.search(lines[line - 1]))

    def visit(node: ast.AST, in_function: bool) -> None:
        run_start = None  # first line of the run of consecutive imports the statement belongs to
        previous_end = None
        for child in ast.iter_child_nodes(node):
            if in_function and isinstance(child, (ast.Import, ast.ImportFrom)):
                if previous_end is None or child.lineno != previous_end + 1:
                    run_start = child.lineno
                previous_end = child.end_lineno
                if not (explained(child.lineno) or explained(run_start) or explained(run_start - 1)):
                    bad.append(child.lineno)
            else:
                previous_end = None
            visit(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)))

    visit(ast.parse(source), False)
    return bad


def _checked_for_local_imports() -> list[Path]:
    files = [f for pkg in LOCAL_IMPORT_PACKAGES for f in _files(pkg)]
    return [f for f in files
            if not any(f.relative_to(ROOT).as_posix().startswith(x) for x in LOCAL_IMPORT_EXCLUDED)]


def test_the_local_import_checker_sees_function_bodies_only(tmp_path):
    f = tmp_path / "m.py"
    f.write_text(
        "import os\n"  # 1 module level: fine
        "try:\n"
        "    import fcntl\n"  # 3 module-level try: fine
        "except ImportError:\n"
        "    fcntl = None\n"
        "def f():\n"
        "    import json  # local files are read below\n"  # 7 a comment that gives no reason: flagged
        "    # local: json costs nothing, but this says so\n"
        "    import csv\n"  # 9 reason on the line above: fine
        "    from x import (a,  # local import: x imports m at module level (cycle)\n"  # 10 fine
        "                   b)\n"
        "class C:\n"
        "    import re\n"  # 13 class body: fine
        "    def m(self):\n"
        "        def inner():\n"
        "            from y import z\n"  # 16 nested function: flagged
        "        return inner\n"
        "async def g():\n"
        "    if True:\n"
        "        import io\n"  # 20 inside a block of an async function: flagged
        "    # local: lm_eval costs ~2 s (measured)\n"
        "    import lm_eval\n"  # 22 fine
        "    from lm_eval import tasks\n"  # 23 same run of imports: fine
        "\n"
        "    from lm_eval import models\n"  # 25 a new run: flagged
    )
    assert unexplained_local_imports(f) == [7, 16, 20, 25]


def test_function_local_imports_say_why():
    """Imports go at the top of the module; one inside a function needs `# local: <reason>` (a measured
    start-up cost, or `# local import: A imports B at module level (cycle)`) on its line or the line above."""
    assert len(_checked_for_local_imports()) > 50  # the walk found the packages
    bad = [f"{f.relative_to(ROOT).as_posix()}:{line}" for f in _checked_for_local_imports()
           for line in unexplained_local_imports(f)]
    assert bad == [], ("imports inside functions without a `# local: <reason>` comment (move them to the top of "
                       "the module, or say why they cannot be there):\n  " + "\n  ".join(bad))
