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


def test_the_sweep_finds_its_report_builder_by_import_path_not_by_a_plugin_group():
    """No entry-point group: the builder is the function ``report.builder`` names, imported by
    its path (the same with and without ``pip install -e .``), and the harness has no static
    import of the reports package."""
    from ablations import sweep
    from ablations.config import ReportCfg
    from reports.build import build

    assert sweep.report_builder(ReportCfg().builder) is build
    text = (ROOT / "pyproject.toml").read_text()
    assert (
        "entry-points" not in text
        and "importlib.metadata" not in (ROOT / "ablations" / "sweep.py").read_text()
    )
