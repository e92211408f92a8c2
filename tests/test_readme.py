"""Every command the README shows exists: each ``python -m <module>`` names an importable module
whose ``--help`` works, each ``make <target>`` is a target of the Makefile, each linked file
exists, and the two set-up commands stay on top."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
BLOCKS = re.findall(r"```(?:bash|sh)?\n(.*?)```", README, flags=re.S)
COMMANDS = [
    line.split("#")[0].strip()
    for block in BLOCKS
    for line in block.replace("\\\n", " ").splitlines()
    if line.strip() and not line.lstrip().startswith("#")
]
MODULES = sorted({m for c in COMMANDS for m in re.findall(r"python -m ([\w.]+)", c)})
TARGETS = sorted({t for c in COMMANDS for t in re.findall(r"^make ([\w-]+)", c)})
MAKEFILE_TARGETS = set(re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), flags=re.M))


def test_two_setup_commands_on_top():
    first = BLOCKS[0].strip().splitlines()
    assert [line.split("#")[0].strip() for line in first] == ["make demo", "make test"]
    assert README.index("```") < README.index("##")


def test_readme_names_commands():
    assert "ablations.sweep" in MODULES and "reports.build" in MODULES
    assert {"demo", "test"} <= set(TARGETS)


@pytest.mark.parametrize("target", TARGETS)
def test_make_target_exists(target):
    assert target in MAKEFILE_TARGETS


@pytest.mark.slow
@pytest.mark.parametrize("module", [m for m in MODULES if m != "mlflow"])
def test_module_exists_and_its_help_works(module):
    assert importlib.util.find_spec(module) is not None, module
    r = subprocess.run(
        [sys.executable, "-m", module, "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert "python -m" in r.stdout  # usage with examples


@pytest.mark.parametrize("link", sorted(set(re.findall(r"\]\(((?!http)[^)#]+)\)", README))))
def test_linked_files_exist(link):
    assert (ROOT / link).exists(), link


@pytest.mark.parametrize(
    ("argv", "hint"),
    [
        (["ablations.sweep", "grid=window_size", "model.windowsize=8"], "'model.window_size'"),
        (["ablations.sweep", "grid=window_size", "--dryrun"], "'--dry-run'"),
        (["ablations.sync", "experimnt=x"], "'experiment'"),
        (["hrsam.evaluate", "protocl=ritm"], "'protocol'"),
        (["hrsam.train", "step=3"], "'steps'"),
        (["reports.build", "experimet=x"], "'experiment'"),
        (["benchmarks.scan", "--lenght", "3"], "'--lengths'"),
        (["benchmarks.attention", "--kernls", "math"], "'--kernels'"),
        (["benchmarks.backbone", "--variant5", "x"], "'--variants'"),
    ],
)
@pytest.mark.slow
def test_misspelt_option_suggests_the_closest(tmp_path, argv, hint):
    r = subprocess.run(
        [sys.executable, "-m", *argv], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and f"did you mean {hint}" in lines[0], r.stderr
