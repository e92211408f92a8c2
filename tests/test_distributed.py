"""Data parallel training on CPU (Gloo): two processes with batch 1 each compute the same steps
as one process with batch 2, whether started by torchrun or as a two-task submitit job."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import TORCHRUN, assert_same_training, python, train_argv, train_state

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def single(tmp_path_factory) -> Path:
    """One process, global batch 2 (and the data, generated once)."""
    tmp = tmp_path_factory.mktemp("ddp")
    r = python(["-m", "hrsam.train", *train_argv(tmp, "single", 2)], tmp)
    assert r.returncode == 0, r.stderr
    return tmp


@pytest.mark.external
def test_torchrun_two_processes_match_one_process_with_the_global_batch(single):
    tmp = single
    r = python(
        [*TORCHRUN, *train_argv(tmp, "ddp", 1)],
        tmp,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert "(2 processes)" in r.stdout and r.stdout.count("trained 3 steps") == 1  # rank 0 only
    _, _, world = train_state(tmp / "ddp" / "last.pt")
    assert world == 2
    assert_same_training(tmp / "ddp" / "last.pt", tmp / "single" / "last.pt")
    # and it is not what one process with batch 1 does (each rank trained its own sample)
    r = python(["-m", "hrsam.train", *train_argv(tmp, "b1", 1)], tmp)
    assert r.returncode == 0, r.stderr
    _, l1, _ = train_state(tmp / "b1" / "last.pt")
    _, l2, _ = train_state(tmp / "ddp" / "last.pt")
    assert l1 != pytest.approx(l2, rel=1e-3)


@pytest.mark.external
def test_torchrun_bad_input_stops_every_rank_with_one_line(tmp_path):
    r = python(
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
    job = ex.submit(main, train_argv(tmp, "submitit", 1))
    assert job.results() == [0, 0]
    _, _, world = train_state(tmp / "submitit" / "last.pt")
    assert world == 2
    assert_same_training(tmp / "submitit" / "last.pt", tmp / "single" / "last.pt")
