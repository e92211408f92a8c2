"""requirements-cpu.lock against pyproject.toml and the installed environment (issue: a fresh
machine gets the tested environment). The full check is `make lock-check` (pip-compile in check
mode, run by CI); these tests are the offline part of it."""

from __future__ import annotations

import os
import sysconfig
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements-cpu.lock"


def read_lock(text: str) -> dict[str, Version]:
    """``name==version`` lines of a pip-compile output, by canonical name."""
    pins = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"unpinned line in the lock: {line!r}"
            pins[canonicalize_name(name)] = Version(version)
    return pins


def project_requirements(pyproject: dict) -> list[Requirement]:
    """The project's dependencies plus its test and dev extras (what the lock is compiled for)."""
    project = pyproject["project"]
    extras = project["optional-dependencies"]
    return [Requirement(r) for r in [*project["dependencies"], *extras["test"], *extras["dev"]]]


def lock_problems(pyproject: dict, pins: dict[str, Version]) -> list[str]:
    """Requirements of ``pyproject`` that the lock lacks or pins outside their range."""
    problems = []
    for req in project_requirements(pyproject):
        pin = pins.get(canonicalize_name(req.name))
        if pin is None:
            problems.append(f"{req.name}: not in the lock")
        elif not req.specifier.contains(pin, prereleases=True):
            problems.append(f"{req.name}: lock pins {pin}, pyproject asks {req.specifier}")
    return problems


@pytest.fixture(scope="module")
def pyproject():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


@pytest.fixture(scope="module")
def pins():
    return read_lock(LOCK.read_text())


def test_lock_covers_every_requirement_of_pyproject(pyproject, pins):
    assert lock_problems(pyproject, pins) == []
    assert str(pins["torch"]).startswith("2.13.0") and pins["torch"].local == "cpu"
    assert not [name for name in pins if name.startswith("nvidia")], "a CUDA package in the lock"


def test_check_fails_when_pyproject_gains_a_dependency(pyproject, pins):
    grown = {**pyproject, "project": dict(pyproject["project"])}
    grown["project"]["dependencies"] = [*pyproject["project"]["dependencies"], "tabulate>=0.9"]
    assert lock_problems(grown, pins) == ["tabulate: not in the lock"]
    narrowed = {**pyproject, "project": dict(pyproject["project"])}
    narrowed["project"]["dependencies"] = ["numpy<1.0"]
    assert lock_problems(narrowed, pins)[0].startswith("numpy: lock pins 2.")


@pytest.mark.skipif(
    os.environ.get("HRSAM_LOCKED") != "1",
    reason="the environment is not the lock's (run by `make test`; `make test-latest` sets LOCK=0)",
)
def test_installed_environment_is_the_lock(pins):
    # the venv's own site-packages: once imported, setuptools puts its vendored copies
    # (packaging, zipp, wheel, ...) on sys.path, and those are not installed packages
    site = sysconfig.get_paths()["purelib"]
    installed = {
        canonicalize_name(d.metadata["Name"]): Version(d.version)
        for d in metadata.distributions(path=[site])
    }
    wrong = {
        name: (str(pin), str(installed.get(name)))
        for name, pin in pins.items()
        if installed.get(name) != pin
    }
    assert wrong == {}, f"installed differs from {LOCK.name} (pin, installed): {wrong}"
