"""Every ``python -m`` entry point defines everything before its ``__main__`` guard (a function
defined after it does not exist when the module runs as a script, while imports in tests work)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODULES = sorted(
    p
    for pkg in ("hrsam", "benchmarks", "ablations", "reports")
    for p in (ROOT / pkg).rglob("*.py")
    if "__main__" in p.read_text()
)


def _is_main_guard(node: ast.stmt) -> bool:
    return (
        isinstance(node, ast.If)
        and isinstance(node.test, ast.Compare)
        and isinstance(node.test.left, ast.Name)
        and node.test.left.id == "__name__"
    )


def test_entry_points_were_found():
    assert len(MODULES) >= 5


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_the_main_guard_is_the_last_statement(path):
    body = ast.parse(path.read_text()).body
    guards = [i for i, node in enumerate(body) if _is_main_guard(node)]
    assert guards in ([], [len(body) - 1]), f"{path}: code after the __main__ guard"
