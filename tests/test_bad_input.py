"""Every bad input a sweep reads is one line before any work: exit code 2, one line on stderr
naming the bad value, and nothing written (the MLflow store byte for byte as it was: no run left
RUNNING, no trial folder, no output folder). Each case calls the command line's ``main`` in-process;
one case runs it as a user does, in a process, for the exit code a shell sees."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ablations import sweep
from tests.helpers import cli

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """An MLflow store holding one finished run (a user's earlier work)."""
    from mlflow.tracking import MlflowClient

    folder = tmp_path_factory.mktemp("store")
    client = MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")
    exp = client.create_experiment("window_size", artifact_location=str(folder / "art"))
    run = client.create_run(exp)
    client.log_metric(run.info.run_id, "noc90", 5.0)
    client.set_terminated(run.info.run_id, "FINISHED")
    return folder / "mlflow.db"


def _case(tmp: Path, name: str) -> list[str]:
    """The extra arguments of case ``name``, with the files it needs made under ``tmp``."""
    if name == "grid file with a YAML error":
        bad = tmp / "mine.yaml"
        bad.write_text("description: mine\nparams:\n  model.window_size: [4, 8\n")
        return [f"grid={bad}"]
    if name == "empty dataset folder":
        (tmp / "DAVIS").mkdir()
        return ["grid=window_size", "data.name=davis", f"data.root={tmp / 'DAVIS'}"]
    if name == "output folder under a regular file":
        (tmp / "a_file").write_text("x")
        return ["grid=window_size", f"out={tmp / 'a_file' / 'sweeps'}"]
    if name == "corrupt checkpoint":
        (tmp / "model.pt").write_bytes(b"not a checkpoint at all")
        return ["grid=window_size", "train.enabled=false", f"model.checkpoint={tmp / 'model.pt'}"]
    return CASES[name][0]


# name -> (arguments, a piece of the one line that names the bad value)
CASES = {
    "unknown grid": (["grid=windowsize"], "unknown grid 'windowsize'; grids: attention"),
    "unknown key": (["grid=window_size", "model.windowsize=8"], "did you mean 'model.window_size'"),
    "grid file with a YAML error": (None, "mine.yaml: line 4 column 1 is not valid YAML"),
    "the same key twice": (["grid=window_size", "seed=1", "seed=2"], "seed=1 and seed=2"),
    "empty dataset folder": (None, "DAVIS' (davis): dataset root"),
    "unwritable output folder": (["grid=window_size", "out=/proc/hrsam"], "out='/proc/hrsam'"),
    "output folder under a regular file": (None, "a_file is a file, not a folder"),
    "unwritable MLflow store": (
        ["grid=window_size", "mlflow.tracking_uri=sqlite:////proc/hrsam/m.db"],
        "mlflow.tracking_uri='sqlite:////proc/hrsam/m.db' cannot be written",
    ),
    "corrupt checkpoint": (None, "is corrupt or not a PyTorch checkpoint"),
    "impossible window size": (["grid=window_size", "model.window_size=0"], "window_size=0"),
    "impossible scene": (["grid=window_size", "data.objects=0"], "data.objects=0 must be"),
    "unknown kernel": (["grid=window_size", "model.kernel=fastest"], "unknown kernel 'fastest'"),
    "unknown executor": (["grid=window_size", "executor=cluster"], "unknown executor 'cluster'"),
    "ts not a multiple of 16": (["grid=window_size", "eval.ts=500"], "eval.ts=500 must be"),
    "unknown option": (["grid=window_size", "--dryrun"], "did you mean '--dry-run'"),
    "unknown report builder": (
        ["grid=window_size", "report.builder=reports.nope:build"],
        "report.builder='reports.nope:build' names no importable module:function",
    ),
    "unknown base": (
        ["grid=window_size", "train.base=imagenet"],
        "train.base='imagenet'; valid: scratch, pretrained",
    ),
    "base without pretrained weights": (
        ["grid=window_size", "train.base=pretrained", "model.preset=sam_vit_b"],
        "train.base=pretrained: no pretrained weights for preset 'sam_vit_b'",
    ),
    "cuda on a machine without one": (
        ["grid=window_size", "device=cuda"],
        "device=cuda but this machine has no CUDA device and executor=local",
    ),
}


def _snapshot(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        if p.is_file()
        else ""
        for p in sorted(folder.rglob("*"))
    }


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_bad_input_is_one_line_exit_2_and_nothing_written(name, store, tmp_path):
    if name == "cuda on a machine without one" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    args = _case(tmp_path, name)
    (tmp_path / "mlflow.db").write_bytes(store.read_bytes())
    before = _snapshot(tmp_path)
    r = cli(sweep.main, *args, cwd=tmp_path)
    assert r.code == 2, r.out + r.err
    lines = r.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.err
    assert CASES[name][1] in lines[0], lines[0]
    assert _snapshot(tmp_path) == before  # no folder, no file, the store unchanged


def test_the_shell_sees_exit_2_and_one_line(store, tmp_path):
    """The real command line in a process: what a shell (and `make`) sees of a bad input."""
    (tmp_path / "mlflow.db").write_bytes(store.read_bytes())
    before = _snapshot(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run(
        [sys.executable, "-m", "ablations.sweep", "grid=window_size", "model.window_size=0"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert r.returncode == 2, r.stdout + r.stderr
    assert r.stdout == "" and r.stderr.count("\n") == 1, r.stderr
    assert r.stderr.startswith("error: ") and "window_size=0" in r.stderr, r.stderr
    assert _snapshot(tmp_path) == before
