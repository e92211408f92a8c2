"""Module docstrings point at files that exist: every repository path a docstring names (a path
with a folder, or a capitalised top-level Markdown file such as the readme) is a tracked file.
Run-time outputs (``outputs/``, ``reports/out/``, ``data/``) and patterns (``<name>``, ``*``) are
not checked."""

from __future__ import annotations

import ast
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PATH = re.compile(
    r"(?<![\w<{*$/.-])((?:[\w.-]+/)+[\w.-]+\.(?:md|py|yaml|yml|json|toml|txt|sh|c))\b"
)
BARE = re.compile(r"(?<![\w/.-])([A-Z][A-Z_]+\.md)\b")
RUNTIME = ("outputs/", "reports/out/", "data/")


def tracked() -> set[str]:
    out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def named_paths(doc: str) -> list[str]:
    return [p for p in PATH.findall(doc) + BARE.findall(doc) if not p.startswith(RUNTIME)]


def test_the_pattern_finds_paths_and_skips_outputs():
    doc = "see docs/architecture.md, DESIGN.md 3, outputs/sweeps/x.md and <out>/_base/model.pt"
    assert named_paths(doc) == ["docs/architecture.md", "DESIGN.md"]


@pytest.mark.parametrize("module", sorted(f for f in tracked() if f.endswith(".py")))
def test_module_docstring_names_only_files_that_exist(module):
    doc = ast.get_docstring(ast.parse((ROOT / module).read_text())) or ""
    files = tracked()
    missing = [p for p in named_paths(doc) if p not in files and not (ROOT / p).exists()]
    assert not missing, f"{module} names {missing}"
