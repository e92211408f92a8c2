"""Numbers a researcher can trust: the same trial gives the same weights and metrics, timings say
what they ran on and whether another trial shared the CPU, runs are visible in MLflow while
they run, and bad checkpoints are refused before anything is submitted."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from ablations import record as R
from ablations import sweep
from tests.test_trial_pipeline import MICRO, records


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.slow
def test_the_same_trial_in_two_experiments_gives_identical_weights_and_metrics(
    tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    for name in ("a", "b"):
        assert (
            sweep.main(["grid=window_size", "model.window_size=4", f"experiment={name}", *MICRO])
            == 0
        )
    (a,), (b,) = records(tmp_path, "a"), records(tmp_path, "b")
    assert a.trial_id == b.trial_id and a.params["seed"] == 42
    ckpts = [
        next((tmp_path / "outputs/sweeps" / name / "cache/train").glob("*/model.pt"))
        for name in ("a", "b")
    ]
    assert _sha(ckpts[0]) == _sha(ckpts[1])
    timings = set(R.BENCH_METRICS) | set(R.EVAL_TIMINGS) | {"train_s"}
    quality = {k: v for k, v in a.metrics.items() if k not in timings}
    assert quality == {k: v for k, v in b.metrics.items() if k not in timings}
    assert {"train_loss", "noc90", R.miou_at(1)} <= set(quality)
    assert a.miou_curve == b.miou_curve
