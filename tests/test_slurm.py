"""The cluster path end to end on a real single-node SLURM (slurm/local/start.sh): a two-trial
sweep goes through one sbatch job array and lands in MLflow. Marked ``slurm``; it starts the
cluster itself when run as root with the Debian packages installed, and skips otherwise."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import SWEEP_MICRO as MICRO
from tests.helpers import children, runs, sweep

ROOT = Path(__file__).resolve().parent.parent
pytestmark = [pytest.mark.slurm, pytest.mark.slow, pytest.mark.external]


@pytest.fixture(scope="module")
def cluster():
    if os.geteuid() != 0:
        pytest.skip("starting the local SLURM cluster needs root")
    if shutil.which("slurmctld") is None and os.environ.get("HRSAM_INSTALL_SLURM") != "1":
        pytest.skip("slurm-wlm is not installed (bash slurm/local/start.sh installs it)")
    r = subprocess.run(
        ["bash", str(ROOT / "slurm" / "local" / "start.sh")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def test_two_trial_sweep_through_a_job_array(cluster, tmp_path):
    r = sweep(
        tmp_path,
        "grid=window_size",
        "model.window_size=4,8",
        "executor=slurm",
        "executor.slurm.preset=local",
        "executor.timeout_min=10",
        *MICRO,
        timeout=900,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    info = json.loads((tmp_path / "outputs/sweeps/window_size/sweep.json").read_text())
    job_ids = [t["job_id"] for t in info["trials"]]
    array = {j.split("_")[0] for j in job_ids}
    assert len(array) == 1 and sorted(j.split("_")[1] for j in job_ids) == ["0", "1"]
    # the sbatch file is an array with the preset's partition
    sbatch = next((tmp_path / "outputs/sweeps/window_size/jobs").rglob("*_submission.sh"))
    text = sbatch.read_text()
    assert "#SBATCH --array=0-1%2" in text and "#SBATCH --partition=debug" in text
    kids = children(runs(tmp_path, "window_size"))
    assert len(kids) == 2 and set(kids["status"]) == {"FINISHED"}
    # the job ids as squeue and the job folders print them (array_task), not SLURM_JOB_ID
    assert sorted(kids["tags.job_id"]) == sorted(job_ids)
    assert set(kids["tags.executor"]) == {"slurm"}


def test_two_task_training_job_is_data_parallel(cluster, tmp_path):
    """`hrsam.train` as a two-task sbatch job (srun starts one process per task, Gloo on CPU)
    computes what one process with the global batch computes."""
    import submitit

    from hrsam.train.__main__ import main
    from tests.helpers import assert_same_training, python, train_argv, train_state

    r = python(["-m", "hrsam.train", *train_argv(tmp_path, "single", 2)], tmp_path)
    assert r.returncode == 0, r.stderr
    ex = submitit.AutoExecutor(
        folder=tmp_path / "jobs", cluster="slurm", slurm_python=sys.executable
    )
    ex.update_parameters(
        tasks_per_node=2,
        cpus_per_task=1,
        timeout_min=10,
        slurm_partition="debug",
        slurm_srun_args=["--cpus-per-task", "1"],
    )
    job = ex.submit(main, train_argv(tmp_path, "slurm", 1))
    assert job.results() == [0, 0], job.stderr()
    assert train_state(tmp_path / "slurm" / "last.pt")[2] == 2
    assert_same_training(tmp_path / "slurm" / "last.pt", tmp_path / "single" / "last.pt")


def test_a_preempted_trial_is_requeued_and_resumes_its_training(cluster, tmp_path):
    """SLURM's time-limit signal (USR2) to a trial that is training: the job checkpoints,
    requeues itself, starts again and training resumes
    from the cache's last checkpoint instead of step 0; the sweep still ends with one FINISHED
    trial."""
    args = [a for a in MICRO if not a.startswith(("train.steps", "train.ckpt_every"))]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HRSAM_FLEX_COMPILE": "0"}
    cmd = [sys.executable, "-m", "ablations.sweep", "grid=window_size", "model.window_size=4"]
    cmd += ["executor=slurm", "executor.slurm.preset=local", "executor.timeout_min=10"]
    cmd += ["train.steps=200", "train.ckpt_every=10", *args]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, text=True)
    cache = tmp_path / "outputs/sweeps/window_size/cache/train"
    deadline = time.monotonic() + 300
    while not list(cache.glob("*/step_000010.pt")):
        assert proc.poll() is None and time.monotonic() < deadline, "training never started"
        time.sleep(0.2)
    jobs = subprocess.run(
        ["squeue", "-h", "-o", "%i", "-n", "hrsam-window_size"], capture_output=True, text=True
    ).stdout.split()
    assert len(jobs) == 1
    interrupted = time.time()
    # the signal SLURM sends before the time limit (--signal=USR2@90). Not submitit's
    # _interrupt() (SIGTERM, then USR2): srun passes the SIGTERM to every process of the step,
    # which can kill the `scontrol requeue` that submitit's USR2 handler is running (seen in CI)
    subprocess.run(["scancel", jobs[0], "--signal", "USR2"], check=True)
    # SLURM holds a requeued job about two minutes before it may start (its begin time); the
    # test is about the resume, so it lets the job start at once, as an admin's scontrol would
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        state = subprocess.run(
            ["squeue", "-h", "-j", jobs[0], "-o", "%T"], capture_output=True, text=True
        ).stdout.strip()
        if state == "PENDING":
            subprocess.run(["scontrol", "update", f"JobId={jobs[0]}", "StartTime=now"], check=True)
            break
        time.sleep(0.2)
    out, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, out
    log = next((tmp_path / "outputs/sweeps/window_size/jobs").rglob("*_0_log.out")).read_text()
    assert "Requeued job" in log and log.count("Starting with JobEnvironment") == 2
    written = {p.name: p.stat().st_mtime for p in cache.glob("*/step_*.pt")}
    assert len(written) == 20  # every periodic checkpoint up to step 200
    assert written["step_000010.pt"] < interrupted  # not rewritten: the second start resumed
    assert max(written.values()) > interrupted
    kids = children(runs(tmp_path, "window_size"))
    assert len(kids) == 1 and set(kids["status"]) == {"FINISHED"}


def test_with_the_controller_stopped_a_slurm_sweep_is_one_line_and_writes_nothing(
    cluster, tmp_path
):
    """The real local cluster, stopped: the sweep asks the controller before anything else
    (no MLflow run left RUNNING, no folder, no sbatch file), then the cluster starts again."""
    stop = subprocess.run(["bash", str(ROOT / "slurm" / "local" / "stop.sh")], timeout=60)
    assert stop.returncode == 0
    try:
        deadline = time.monotonic() + 30
        while subprocess.run(["sinfo", "-h"], capture_output=True, timeout=20).returncode == 0:
            assert time.monotonic() < deadline, "slurmctld still answers after stop.sh"
            time.sleep(0.5)
        r = sweep(tmp_path, "grid=window_size", "executor=slurm", *MICRO, timeout=120)
        assert r.returncode == 2, r.stdout + r.stderr
        [line] = r.stderr.strip().splitlines()
        assert line.startswith("error: executor=slurm but the SLURM controller does not answer")
        assert "make slurm-up" in line
        assert sorted(p.name for p in tmp_path.iterdir()) == []  # no mlflow.db, no outputs/
    finally:
        start = subprocess.run(
            ["bash", str(ROOT / "slurm" / "local" / "start.sh")],
            capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        assert start.returncode == 0, start.stdout + start.stderr
