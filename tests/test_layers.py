"""Layers point one way: hrsam (the library) <- ablations <- reports / benchmarks. A test walks
every import statement (module level and inside functions) of each package."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# package -> the project packages it must not import
FORBIDDEN = {
    "hrsam": ("ablations", "reports", "benchmarks"),
    "ablations": ("reports", "benchmarks"),
    "reports": ("benchmarks",),
}


def imports(path: Path) -> list[tuple[int, str]]:
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            out.append((node.lineno, node.module))
    return out


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_a_layer_imports_nothing_above_it(package):
    upward = [
        f"{path.relative_to(ROOT)}:{line}: import {name}"
        for path in sorted((ROOT / package).rglob("*.py"))
        for line, name in imports(path)
        if name.split(".")[0] in FORBIDDEN[package]
    ]
    assert not upward, f"{package} imports a layer above it:\n" + "\n".join(upward)


def test_the_walk_sees_an_import_inside_a_function(tmp_path):
    src = tmp_path / "m.py"
    src.write_text("def f():\n    from reports import build\n    import benchmarks.scan\n")
    assert imports(src) == [(2, "reports"), (3, "benchmarks.scan")]
