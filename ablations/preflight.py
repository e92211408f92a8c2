"""Checks of the machine a sweep starts on, run once after the plan and before anything is
written: the output folder and the MLflow store can be written, the executor's cluster answers,
a requested CUDA device exists where the trials will run. Each failure is a `ConfigError`: one
line naming the value and what would be valid, exit code 2, nothing left behind (no folder, no
MLflow run).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from ablations.config import ConfigError


def check(cfg: dict, folder: Path, devices: set[str], dry_run: bool = False) -> None:
    """All of the sweep-level checks (``devices``: those the trials ask for); ``dry_run``: only
    those that write nothing."""
    check_device(cfg, devices)
    check_cluster(cfg)
    check_report_builder(cfg)
    check_writable(folder, "out", cfg["out"], probe=not dry_run)
    uri = cfg["mlflow"]["tracking_uri"]
    if uri.startswith("sqlite:///"):
        db = Path(uri.removeprefix("sqlite:///"))
        check_writable(db.parent, "mlflow.tracking_uri", uri, probe=not dry_run)


def check_device(cfg: dict, devices: set[str]) -> None:
    """``device=cuda`` with an executor that runs the trials on this machine needs CUDA here."""
    import torch

    executor = cfg["executor"]["name"]
    if "cuda" in devices and executor in ("debug", "local") and not torch.cuda.is_available():
        raise ConfigError(
            f"device=cuda but this machine has no CUDA device and executor={executor} runs the "
            "trials here; use device=auto or device=cpu, or executor=slurm for GPU nodes"
        )


def check_report_builder(cfg: dict) -> None:
    """``report.builder`` names a module that can be found (not imported here: the reports
    package's imports are heavy) and a function in the ``module:function`` form."""
    import importlib.util

    if not cfg["report"]["enabled"]:
        return
    spec = cfg["report"]["builder"]
    module, sep, name = spec.partition(":")
    try:
        found = bool(module) and importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        found = False
    if not sep or not name or not found:
        raise ConfigError(
            f"report.builder={spec!r} names no importable module:function (default "
            "reports.build:build); or report=false"
        )


def check_cluster(cfg: dict) -> None:
    """``executor=slurm`` needs a SLURM controller that answers (``sinfo``) before submitting."""
    if cfg["executor"]["name"] != "slurm":
        return
    if shutil.which("sinfo") is None:
        raise ConfigError(
            "executor=slurm but this machine has no SLURM client (sinfo not found); "
            "use executor=local, or start a local cluster with make slurm-up"
        )
    try:
        done = subprocess.run(
            ["sinfo", "-h", "-o", "%P"], capture_output=True, text=True, timeout=20
        )
    except subprocess.TimeoutExpired:
        done = None
    if done is None or done.returncode != 0:
        why = "no answer in 20 s" if done is None else _first_line(done.stderr) or "it failed"
        raise ConfigError(
            f"executor=slurm but the SLURM controller does not answer (sinfo: {why}); "
            "start it (make slurm-up on a single node) or use executor=local"
        )


def check_writable(path: Path, key: str, value: str, probe: bool = True) -> None:
    """``path`` can hold this sweep's files: its nearest existing ancestor is a folder, and
    (``probe``) a folder made under it can be written and removed again."""
    path = Path(path).absolute()
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"{key}={value!r}: {existing} is a file, not a folder; choose a folder")
    if not probe:
        return
    created = [p for p in [path, *path.parents] if not p.exists()]
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path):
            pass
    except OSError as e:
        why = f"{e.strerror or type(e).__name__}: {e.filename or path}"
        raise ConfigError(
            f"{key}={value!r} cannot be written ({why}); choose a folder you can write"
        ) from None
    finally:
        for p in created:  # nothing left behind by the check itself (deepest first)
            if p.is_dir() and not any(p.iterdir()):
                p.rmdir()


def _first_line(text: str) -> str:
    lines = [x.strip() for x in (text or "").strip().splitlines() if x.strip()]
    return lines[0] if lines else ""
