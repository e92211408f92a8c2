"""The cluster path end to end on a real single-node SLURM (slurm/local/start.sh): a two-trial
sweep goes through one sbatch job array and lands in MLflow. Marked ``slurm``; it starts the
cluster itself when run as root with the Debian packages installed, and skips otherwise."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.test_sweep import MICRO, children, runs, sweep

ROOT = Path(__file__).resolve().parent.parent
pytestmark = [pytest.mark.slurm, pytest.mark.slow]


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
    assert set(kids["tags.slurm_job_id"].str.len() > 0) == {True}
