"""Data parallel training on CPU (Gloo): two processes with batch 1 each compute the same steps
as one process with batch 2, whether started by torchrun or as a two-task submitit job."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hrsam.models.checkpoint import read_state

ROOT = Path(__file__).resolve().parents[1]
TORCHRUN = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
TORCHRUN += ["-m", "hrsam.train"]


def _argv(tmp: Path, out: str, batch: int) -> list[str]:
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


def _python(args: list[str], tmp: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "SUBMITIT_EXECUTOR"):
        env.pop(k, None)
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )


def _state(path: Path) -> tuple[dict, list[float], int]:
    s = read_state(path)
    return s["state_dict"], s["losses"], s["meta"]["train"]["world_size"]


def _assert_same_training(a: Path, b: Path) -> None:
    """Same losses (to float rounding) and the same weight trajectory: the two runs' weights
    differ by < 1% of how far training moved them. (Not element-wise: key biases get no gradient
    since softmax ignores them, and AdamW turns their rounding noise into +-lr steps.)"""
    from hrsam.models import load_model

    wa, la, _ = _state(a)
    wb, lb, _ = _state(b)
    assert la == pytest.approx(lb, rel=1e-4)
    torch.manual_seed(42)  # the CLI's default seed builds the initial weights
    w0 = load_model("hrsam_tiny").state_dict()
    moved = torch.cat([(wa[k].float() - w0[k].float()).flatten() for k in wa]).norm()
    diff = torch.cat([(wa[k].float() - wb[k].float()).flatten() for k in wa]).norm()
    assert moved > 0.1 and diff < 0.01 * moved, (float(diff), float(moved))


@pytest.fixture(scope="module")
def single(tmp_path_factory) -> Path:
    """One process, global batch 2 (and the data, generated once)."""
    tmp = tmp_path_factory.mktemp("ddp")
    r = _python(["-m", "hrsam.train", *_argv(tmp, "single", 2)], tmp)
    assert r.returncode == 0, r.stderr
    return tmp


@pytest.mark.external
def test_torchrun_two_processes_match_one_process_with_the_global_batch(single):
    tmp = single
    r = _python(
        [*TORCHRUN, *_argv(tmp, "ddp", 1)],
        tmp,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert "(2 processes)" in r.stdout and r.stdout.count("trained 3 steps") == 1  # rank 0 only
    _, _, world = _state(tmp / "ddp" / "last.pt")
    assert world == 2
    _assert_same_training(tmp / "ddp" / "last.pt", tmp / "single" / "last.pt")
    # and it is not what one process with batch 1 does (each rank trained its own sample)
    r = _python(["-m", "hrsam.train", *_argv(tmp, "b1", 1)], tmp)
    assert r.returncode == 0, r.stderr
    _, l1, _ = _state(tmp / "b1" / "last.pt")
    _, l2, _ = _state(tmp / "ddp" / "last.pt")
    assert l1 != pytest.approx(l2, rel=1e-3)


@pytest.mark.external
def test_torchrun_bad_input_stops_every_rank_with_one_line(tmp_path):
    r = _python(
        [
            *TORCHRUN,
            "preset=hrsam_tiny",
            "data.name=davis",
            "data.root=/nonexistent",
            "device=cpu",
            f"out={tmp_path / 'bad'}",
        ],
        tmp_path,
    )
    assert r.returncode != 0
    lines = [x for x in r.stderr.splitlines() if x.startswith("error: ")]
    assert lines and all("dataset root /nonexistent does not exist" in x for x in lines)
    assert not (tmp_path / "bad" / "last.pt").exists()


@pytest.mark.external
def test_two_task_submitit_job_matches_one_process(single):
    import submitit

    from hrsam.train.__main__ import main

    tmp = single
    ex = submitit.LocalExecutor(folder=tmp / "jobs")
    ex.update_parameters(tasks_per_node=2, timeout_min=10, cpus_per_task=1)
    job = ex.submit(main, _argv(tmp, "submitit", 1))
    assert job.results() == [0, 0]
    _, _, world = _state(tmp / "submitit" / "last.pt")
    assert world == 2
    _assert_same_training(tmp / "submitit" / "last.pt", tmp / "single" / "last.pt")
