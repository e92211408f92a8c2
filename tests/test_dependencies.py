"""Every package the code imports is declared for where it is used: the library, the harness
and the benchmarks (what the wheel installs) in ``[project] dependencies``; the tests in the
``test`` extra besides them. Imports anywhere count, inside functions too; the GPU-only packages
(imported lazily, never required) are in ``requirements-gpu.txt``."""

from __future__ import annotations

import ast
import importlib.metadata as md
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIRST_PARTY = {"hrsam", "ablations", "reports", "benchmarks", "tests", "tools"}
GPU_ONLY = {"flash_attn", "mamba_ssm", "xformers", "causal_conv1d", "triton"}
# imports whose distribution is another's dependency by design (torch ships these)
PROVIDED = {"torchvision"}


def _name(requirement: str) -> str:
    return re.split(r"[\s<>=!~;\[]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def declared() -> tuple[set[str], set[str]]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    main = {_name(r) for r in project["dependencies"]}
    test = {_name(r) for r in project["optional-dependencies"]["test"]}
    return main, test


def imports(folder: str) -> dict[str, str]:
    """Top-level third-party modules imported by the tracked files under ``folder``, with one
    file that imports each."""
    files = subprocess.run(
        ["git", "ls-files", f"{folder}/*.py"], cwd=ROOT, capture_output=True, text=True
    ).stdout.split()
    found: dict[str, str] = {}
    for f in files:
        for node in ast.walk(ast.parse((ROOT / f).read_text())):
            if isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                mods = [node.module]
            else:
                continue
            for m in mods:
                top = m.split(".")[0]
                if top not in sys.stdlib_module_names and top not in FIRST_PARTY:
                    found.setdefault(top, f)
    return found


def distributions(module: str) -> set[str]:
    return {d.lower().replace("_", "-") for d in md.packages_distributions().get(module, [])}


def undeclared(folders: list[str], allowed: set[str]) -> list[str]:
    out = []
    for folder in folders:
        for module, where in sorted(imports(folder).items()):
            if module in GPU_ONLY or module in PROVIDED:
                continue
            dists = distributions(module)
            if not dists & allowed:
                out.append(f"{module} ({where}; distribution {sorted(dists) or 'not installed'})")
    return out


@pytest.mark.slow
def test_the_wheels_packages_import_only_declared_dependencies():
    main, _ = declared()
    assert undeclared(["hrsam", "ablations", "reports", "benchmarks"], main) == []


@pytest.mark.slow
def test_the_tests_import_only_declared_dependencies():
    main, test = declared()
    assert undeclared(["tests", "tools"], main | test) == []


def test_gpu_only_packages_are_in_requirements_gpu():
    text = (ROOT / "requirements-gpu.txt").read_text().lower().replace("_", "-")
    for module in ("flash_attn", "mamba_ssm", "xformers"):  # imported lazily by importlib
        assert re.search(rf"^{module.replace('_', '-')}\b", text, re.M), module


def test_the_check_finds_an_undeclared_import():
    """The check itself: a module importing an installed but undeclared package is reported."""
    main, _ = declared()
    assert undeclared(["hrsam"], main - {"scipy"})  # scipy is imported by hrsam


@pytest.mark.slow
def test_the_wheel_carries_what_the_code_reads_at_run_time(tmp_path):
    """The built wheel holds the sweep's config tree, the app's page, the C scan kernel's source
    and the pretrained bases with their manifests (an install without the checkout runs the
    sweep's and the app's --help: measured into an empty venv, benchmarks/results/cpu/wheel.md)."""
    import zipfile

    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "-w", str(tmp_path), str(ROOT)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    [wheel] = tmp_path.glob("hrsam_bench-*.whl")
    files = set(zipfile.ZipFile(wheel).namelist())
    want = {
        "ablations/conf/defaults.yaml", "ablations/conf/pretrain.yaml",
        "ablations/conf/grid/window_size.yaml", "ablations/conf/executor/local.yaml",
        "ablations/conf/profile/paper.yaml", "hrsam/app/static/index.html",
        "hrsam/ssm/csrc/selective_scan.c",
    }  # fmt: skip
    for preset in ("hrsam_tiny", "hrsampp_tiny"):
        want |= {f"hrsam/pretrained/{preset}.safetensors", f"hrsam/pretrained/{preset}.json"}
    assert want <= files, sorted(want - files)
