"""Helpers more than one test module uses, in one place (test modules import this, never each
other): the micro sweeps' arguments and how to run and read them, a CLI called in-process, the
data-parallel training runs, runs frames shaped like MLflow's, a free loopback port and a uvicorn
server in a thread."""

from __future__ import annotations

import contextlib
import io
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import pandas as pd
import pytest
import torch

from ablations.record import TrialRecord

ROOT = Path(__file__).resolve().parent.parent

# -- micro sweeps: what tests about the harness run (no pretrained base, seconds per trial) -------

# a sweep that trains and evaluates in seconds: 64 px images, 3 training steps, 3 clicks
SWEEP_MICRO = [
    "train.steps=3",
    "train.base=scratch",  # these tests are about the harness: no pretrained base
    "train.base_steps=0",  # no shared base training (the default recipe has one)
    "train.ts=64",
    "train.ckpt_every=0",
    "data.size=64",
    "data.n_train=2",
    "data.n_val=2",
    "eval.ts=64",
    "eval.max_clicks=3",
    "bench.reps=1",
    "bench.sat_points=2",
    "report=false",
]
# the same, smaller still and in-process (executor=debug): one trial's path
DEBUG_MICRO = [
    "executor=debug",
    "train.steps=2",
    "train.base=scratch",
    "train.base_steps=0",
    "train.ts=64",
    "train.ckpt_every=0",
    "data.size=64",
    "data.n_train=2",
    "data.n_val=1",
    "eval.ts=64",
    "eval.max_clicks=2",
    "bench.reps=1",
    "bench.sat_points=2",
    "report=false",
]


def with_keys(args: list[str], *extra: str) -> list[str]:
    """``args`` with the keys of ``extra`` replaced (a key given twice is an error, exit 2)."""
    keys = {e.split("=", 1)[0] for e in extra}
    return [a for a in args if a.split("=", 1)[0] not in keys] + list(extra)


def sweep(
    tmp: Path, *args: str, timeout: float = 600, env_extra: dict | None = None, **popen
) -> subprocess.CompletedProcess:
    """``python -m ablations.sweep *args`` in a process, in ``tmp`` (where the process itself is
    under test: exit codes a shell sees, kills, local and SLURM jobs)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HRSAM_FLEX_COMPILE": "0", **(env_extra or {})}
    return subprocess.run(
        [sys.executable, "-m", "ablations.sweep", *args],
        cwd=tmp,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        **popen,
    )


def runs(tmp: Path, experiment: str) -> pd.DataFrame:
    """Every MLflow run of ``experiment`` in ``tmp``'s SQLite store."""
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{tmp / 'mlflow.db'}")
    return mlflow.search_runs(experiment_names=[experiment])


def children(df: pd.DataFrame) -> pd.DataFrame:
    """The trial runs of a runs frame (not the sweeps' parent runs)."""
    return df[df["tags.hrsam.role"] == "trial"]


def mlflow_params(tmp: Path, experiment: str) -> pd.DataFrame:
    return children(runs(tmp, experiment))


def records(tmp: Path, experiment: str) -> list[TrialRecord]:
    """The trial records a sweep run in ``tmp`` left, in file order."""
    folder = tmp / "outputs" / "sweeps" / experiment / "trials"
    return [TrialRecord.load(p) for p in sorted(folder.iterdir()) if not p.name.startswith(".")]


# -- a CLI in-process --------------------------------------------------------------------------


class Result(NamedTuple):
    code: int
    out: str
    err: str

    # read like subprocess.CompletedProcess, so a test can switch between the two
    @property
    def returncode(self) -> int:
        return self.code

    @property
    def stdout(self) -> str:
        return self.out

    @property
    def stderr(self) -> str:
        return self.err


def cli(main: Callable[[list[str]], object], *argv: str, cwd: Path | None = None) -> Result:
    """``main(argv)`` in this process, as the shell would see it: its exit code (``SystemExit``
    caught; a return value of None is 0), stdout and stderr, run in ``cwd`` when given."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.ExitStack() as stack:
        if cwd is not None:
            stack.enter_context(contextlib.chdir(cwd))
        stack.enter_context(contextlib.redirect_stdout(out))
        stack.enter_context(contextlib.redirect_stderr(err))
        try:
            code = main(list(argv))
        except SystemExit as e:
            code = e.code
    if code is None:
        code = 0
    elif not isinstance(code, int):  # SystemExit("message"): printed to stderr, exit 1
        err.write(f"{code}\n")
        code = 1
    return Result(code, out.getvalue(), err.getvalue())


def sweep_in(tmp: Path, *args: str) -> Result:
    """``python -m ablations.sweep *args`` in-process, in ``tmp`` (the debug executor's trials
    then run in this process too): where what is tested is the sweep's work, not its process."""
    from ablations.sweep import main

    return cli(main, *args, cwd=tmp)


# -- data-parallel training: the same steps in one process or several -------------------------

TORCHRUN = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
TORCHRUN += ["-m", "hrsam.train"]


def train_argv(tmp: Path, out: str, batch: int) -> list[str]:
    """``hrsam.train``'s arguments for 3 steps of hrsam_tiny at ts 128 with ``batch`` per rank."""
    return [
        "preset=hrsam_tiny",
        "recipe=interactive",
        "steps=3",
        "ts=128",
        f"batch={batch}",
        "lr=1e-3",
        "device=cpu",
        f"data.root={tmp / 'syn'}",
        "data.size=128",
        "data.n_train=6",
        f"out={tmp / out}",
    ]


def python(args: list[str], tmp: Path) -> subprocess.CompletedProcess:
    """``python *args`` in the repository with one thread and no inherited rank variables."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "SUBMITIT_EXECUTOR"):
        env.pop(k, None)
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )


def train_state(path: Path) -> tuple[dict, list[float], int]:
    """A training checkpoint's weights, losses and world size."""
    from hrsam.models.checkpoint import read_state

    s = read_state(path)
    return s["state_dict"], s["losses"], s["meta"]["train"]["world_size"]


def assert_same_training(a: Path, b: Path) -> None:
    """Same losses (to float rounding) and the same weight trajectory: the two runs' weights
    differ by < 1% of how far training moved them. (Not element-wise: key biases get no gradient
    since softmax ignores them, and AdamW turns their rounding noise into +-lr steps.)"""
    from hrsam.models import load_model

    wa, la, _ = train_state(a)
    wb, lb, _ = train_state(b)
    assert la == pytest.approx(lb, rel=1e-4)
    torch.manual_seed(42)  # the CLI's default seed builds the initial weights
    w0 = load_model("hrsam_tiny").state_dict()
    moved = torch.cat([(wa[k].float() - w0[k].float()).flatten() for k in wa]).norm()
    diff = torch.cat([(wa[k].float() - wb[k].float()).flatten() for k in wa]).norm()
    assert moved > 0.1 and diff < 0.01 * moved, (float(diff), float(moved))


# -- runs frames built here, the way mlflow.search_runs returns them ----------------------------


def run(params: dict, metrics: dict | None = None, status="FINISHED", error=None, **tags) -> dict:
    return {"params": params, "metrics": metrics or {}, "status": status, "error": error, **tags}


def runs_frame(*runs: dict, grid: str = "g", parent: str = "P") -> pd.DataFrame:
    """``search_runs``-shaped frame of trial runs (params as strings, as MLflow stores them)."""
    rows = []
    for i, r in enumerate(runs):
        row = {
            "run_id": f"run{i}",
            "status": r["status"],
            "start_time": pd.Timestamp("2026-11-01") + pd.Timedelta(seconds=i),
            "tags.hrsam.role": "trial",
            "tags.hrsam.trial_id": r.get("trial_id", f"t{i}"),
            "tags.hrsam.grid": r.get("grid", grid),
            "tags.hrsam.label": f"trial {i}",
            "tags.mlflow.parentRunId": parent,
        }
        if r["error"]:
            row["tags.hrsam.error"] = r["error"]
        row |= {k: v for k, v in r.get("extra_tags", {}).items() if k not in row}
        row |= {f"params.{k}": "None" if v is None else str(v) for k, v in r["params"].items()}
        row |= {f"metrics.{k}": float(v) for k, v in r["metrics"].items()}
        rows.append(row)
    return pd.DataFrame(rows)


# -- servers -----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(app, timeout_s: float = 30) -> tuple[str, object, threading.Thread]:
    """``app`` served by uvicorn on a free loopback port in a daemon thread, once it answers:
    (its base URL, the server (set ``should_exit`` to stop it), the thread)."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout_s
    while not server.started:
        assert time.monotonic() < deadline, "the app did not start"
        time.sleep(0.05)
    return f"http://127.0.0.1:{port}", server, thread
