"""Fails when a function is longer than the limit (lines from ``def`` to its last line) or a
module longer than its limit, in the given folders: ``python tools/function_length.py``.

The trial path and the harness around it (ablations, reports, benchmarks) stay readable without
scrolling: no function over 80 lines, no module over 500 (issue #32). ruff's C901 (complexity)
and PLR0915 (statements) in pyproject.toml keep the inside of a function in check; this keeps
its length."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

FOLDERS = ("ablations", "reports", "benchmarks")
MAX_FUNCTION_LINES = 80
MAX_MODULE_LINES = 500


def too_long(path: Path) -> list[str]:
    text = path.read_text()
    out = []
    if (n := len(text.splitlines())) > MAX_MODULE_LINES:
        out.append(f"{path}: module of {n} lines (at most {MAX_MODULE_LINES})")
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            n = node.end_lineno - node.lineno + 1
            if n > MAX_FUNCTION_LINES:
                out.append(
                    f"{path}:{node.lineno}: {node.name} is {n} lines (at most {MAX_FUNCTION_LINES})"
                )
    return out


def main(argv: list[str]) -> int:
    root = Path(__file__).resolve().parent.parent
    folders = argv or FOLDERS
    found = [m for f in folders for p in sorted((root / f).rglob("*.py")) for m in too_long(p)]
    for line in found:
        print(line, file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
