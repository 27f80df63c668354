"""The house rules of docs/architecture.md, checked: import layers and in-function imports."""
from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_import_contracts_hold():
    """import-linter's contracts in pyproject.toml (layers, solvers never imports service)."""
    exe = shutil.which("lint-imports")
    if exe is None:
        pytest.fail("lint-imports is not installed: pip install -e '.[test]'")
    run = subprocess.run([exe, "--config", str(ROOT / "pyproject.toml")], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "0 broken" in run.stdout, run.stdout


def _imports_inside_functions(path: Path):
    tree = ast.parse(path.read_text(), str(path))
    lines = path.read_text().splitlines()
    for func in ast.walk(tree):
        if not isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for node in ast.walk(func):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                line = lines[node.lineno - 1]
                above = lines[node.lineno - 2].strip() if node.lineno >= 2 else ""
                yield node.lineno, line.strip(), "#" in line or above.startswith("#")


def test_imports_inside_functions_say_why():
    """An import inside a function (an optional dependency, a process boundary) carries a
    one-line reason, on its line or the line above; anything else belongs at the top."""
    unexplained = []
    for package in ("solvers", "service"):
        for path in sorted((ROOT / package).rglob("*.py")):
            for lineno, text, explained in _imports_inside_functions(path):
                if not explained:
                    unexplained.append(f"{path.relative_to(ROOT)}:{lineno}: {text}")
    assert not unexplained, "imports inside functions without a reason:\n" + "\n".join(unexplained)


def test_the_rule_finds_an_unexplained_import(tmp_path):
    """The check above can fail: a bare in-function import is reported, a commented one is not."""
    src = tmp_path / "m.py"
    src.write_text("def f():\n    import json\n    return json\n\n"
                   "def g():\n    import csv  # optional: only for exports\n    return csv\n")
    found = list(_imports_inside_functions(src))
    assert [(n, ok) for n, _, ok in found] == [(2, False), (6, True)]


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
