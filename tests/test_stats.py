"""reports/stats.py and what the reports make of it: per-object metric definitions, the bootstrap
against a loop written out by hand, paired differences, saturation, and a report built from a
SQLite MLflow store whose runs carry known IoU matrices (intervals, deltas, marks, baseline)."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest

from ablations import config as C
from ablations import record as R
from ablations import spec as S
from ablations import sweep as sweep_cli
from ablations.record import TrialRecord
from reports import build as report_build
from reports import stats


def hand_interval(values, resamples=stats.RESAMPLES, seed=stats.SEED):
    """The percentile bootstrap written out: resample, average, sort, interpolate."""
    values = list(map(float, values))
    n = len(values)
    idx = np.random.default_rng(seed).integers(0, n, size=(resamples, n))
    means = sorted(sum(values[j] for j in row) / n for row in idx)

    def quantile(q):  # numpy's default (linear) rule
        pos = (len(means) - 1) * q
        lo, frac = math.floor(pos), pos - math.floor(pos)
        hi = min(lo + 1, len(means) - 1)
        return means[lo] + (means[hi] - means[lo]) * frac

    return sum(values) / n, quantile(0.025), quantile(0.975)


# a 4-object, 5-click matrix with every case: reached at once, late, at the last click, never
IOUS = np.array(
    [
        [0.91, 0.93, 0.96, 0.97, 0.97],  # NoC85 1, NoC90 1, NoC95 3
        [0.50, 0.86, 0.88, 0.91, 0.92],  # 2, 4, never -> 5
        [0.40, 0.60, 0.70, 0.80, 0.90],  # never -> 5 (85 reached at click 5), 5, 5
        [0.10, 0.20, 0.30, 0.40, 0.50],  # never: 5, 5, 5
    ]
)


def test_per_object_values_follow_the_protocol():
    assert stats.per_object(IOUS, "noc85").tolist() == [1, 2, 5, 5]
    assert stats.per_object(IOUS, "noc90").tolist() == [1, 4, 5, 5]
    assert stats.per_object(IOUS, "noc95").tolist() == [3, 5, 5, 5]
    # NoF counts an object reached only at the last click (the RITM code definition)
    assert stats.per_object(IOUS, "nof90").tolist() == [0, 0, 1, 1]
    assert stats.per_object(IOUS, "miou_at_2").tolist() == [0.93, 0.86, 0.60, 0.20]
    with pytest.raises(ValueError, match="not a per-object metric"):
        stats.per_object(IOUS, "encoder_ms")


def test_bootstrap_equals_the_hand_loop():
    values = np.random.default_rng(3).gamma(2.0, 3.0, size=37)
    ci = stats.bootstrap(values)
    mean, lo, hi = hand_interval(values)
    assert ci.mean == pytest.approx(mean, abs=1e-12)
    assert (ci.lo, ci.hi) == (pytest.approx(lo, abs=1e-12), pytest.approx(hi, abs=1e-12))
    assert ci.lo < ci.mean < ci.hi and ci.n == 37
    # about the normal interval for a large sample (sanity of the percentile method)
    big = np.random.default_rng(4).normal(10.0, 2.0, size=4000)
    wide = stats.bootstrap(big)
    half = 1.96 * big.std(ddof=1) / math.sqrt(len(big))
    assert (wide.hi - wide.lo) / 2 == pytest.approx(half, rel=0.1)


def test_constant_values_give_a_point_interval_and_paired_deltas_cancel_objects():
    ci = stats.bootstrap(np.full(10, 7.0))
    assert (ci.mean, ci.lo, ci.hi) == (7.0, 7.0, 7.0)
    names = [f"o{i}" for i in range(10)]
    spread = np.linspace(1, 20, 10)  # large object-to-object spread
    # every object 2 clicks better: the paired interval is exactly -2 and excludes zero,
    # while unpaired intervals of the two settings overlap
    a, b = (names, spread - 2.0), (names, spread)
    d = stats.paired_delta(a, b, "noc90")
    assert (d.mean, d.lo, d.hi) == (-2.0, -2.0, -2.0) and d.excludes_zero
    ia, ib = stats.interval(a, "noc90"), stats.interval(b, "noc90")
    assert ia.hi > ib.lo  # overlap: only the pairing separates them
    same = stats.paired_delta(b, b, "noc90")
    assert (same.lo, same.hi) == (0.0, 0.0) and not same.excludes_zero
    # pairing is by object name, not row order; no common object: nothing to pair
    shuffled = (names[::-1], (spread - 2.0)[::-1])
    assert stats.paired_delta(shuffled, b, "noc90").mean == -2.0
    assert stats.paired_delta((["x"], np.ones(1)), b, "noc90") is None


def test_nof_interval_is_a_count_of_objects():
    values = (["a", "b", "c", "d"], stats.per_object(IOUS, "nof90"))
    ci = stats.interval(values, "nof90")
    mean, lo, hi = hand_interval(values[1])
    assert ci.mean == 4 * mean == 2.0
    assert (ci.lo, ci.hi) == (pytest.approx(4 * lo), pytest.approx(4 * hi))


def test_saturation_flag():
    names = ["a", "b", "c", "d"]
    noc95 = (names, stats.per_object(IOUS, "noc95"))  # 3 of 4 at the 5-click cap
    noc85 = (names, stats.per_object(IOUS, "noc85"))  # 2 of 4: not more than half
    assert stats.saturated(noc95, "noc95", 5)
    assert not stats.saturated(noc85, "noc85", 5)
    assert stats.saturated((names, stats.per_object(IOUS, "nof95")), "nof95", 5)
    assert not stats.saturated((names, stats.per_object(IOUS, "miou_at_1")), "miou_at_1", 5)


def test_repeats_average_per_object_values_over_the_objects_all_evaluated():
    r1 = (["a", "b", "c"], IOUS[:3])
    r2 = (["c", "b"], IOUS[[3, 0]])  # another order, one object fewer
    names, values = stats.object_values([r1, r2], "noc90")
    assert names == ["b", "c"]
    assert values.tolist() == [(4 + 1) / 2, (5 + 5) / 2]


# -- a report from a real SQLite store -------------------------------------------------------

N_OBJ, K = 24, 10


def window_matrices() -> dict[int, np.ndarray]:
    """Known matrices: window 8 is 1-2 clicks better than 4 on every object, 16 ties 4 on
    average but differs per object; NoC95 sits at the cap for most objects everywhere."""
    rng = np.random.default_rng(11)
    start = rng.uniform(0.3, 0.8, N_OBJ)
    slope = rng.uniform(0.02, 0.08, N_OBJ)
    clicks = np.arange(K)
    base = np.clip(start[:, None] + slope[:, None] * clicks, 0, 0.94)
    better = np.clip(base + 0.08, 0, 0.94)
    noisy = np.clip(base + rng.normal(0, 0.05, (N_OBJ, 1)), 0, 0.94)
    return {4: base, 8: better, 16: noisy}


def write_ious(folder: Path, matrix: np.ndarray) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "ious.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["name", *(f"click{k}" for k in range(1, K + 1))])
        for i, row in enumerate(matrix):
            w.writerow([f"{i:05d}", *(f"{v:.17g}" for v in row)])


@pytest.fixture(scope="module")
def known_store(tmp_path_factory) -> dict:
    from mlflow import MlflowClient

    from hrsam.interactive.metrics import summarize

    root = tmp_path_factory.mktemp("stats")
    uri = f"sqlite:///{root}/mlflow.db"
    client = MlflowClient(uri)
    exp = client.create_experiment("ws", artifact_location=(root / "art").as_uri())
    tags = R.parent_tags("s1", "window_size", ["model.window_size"])
    parent = client.create_run(exp, run_name="window_size", tags=tags).info.run_id
    client.log_param(parent, "trials", "3")
    matrices = window_matrices()
    for ws, m in matrices.items():
        record = TrialRecord(f"t{ws}", "s1", "window_size", "ws", f"window_size={ws}")
        record.params = {"model.window_size": ws, "eval.max_clicks": K, "eval.protocol": "hrsam"}
        summary = summarize(m, K)
        record.metrics = {k.replace("@", "_at_"): v for k, v in summary.items()}
        run_id = client.create_run(exp, run_name=record.label, tags=record.mlflow_tags(parent))
        run_id = run_id.info.run_id
        for k, v in record.mlflow_metrics().items():
            client.log_metric(run_id, k, v)
        for k, v in record.mlflow_params().items():
            client.log_param(run_id, k, v)
        write_ious(root / f"ious{ws}", m)
        client.log_artifacts(run_id, str(root / f"ious{ws}"))
        client.set_terminated(run_id, "FINISHED")
    return {"uri": uri, "root": root, "matrices": matrices, "parent": parent}


def read_csv(path: Path) -> dict[str, dict]:
    with open(path) as f:
        return {row[next(iter(row))]: row for row in csv.DictReader(f)}


def test_report_intervals_and_paired_deltas_equal_the_hand_computation(known_store):
    out = known_store["root"] / "report"
    report_build.build("ws", None, out, known_store["uri"], log=False)
    m = known_store["matrices"]
    values = read_csv(out / "tables" / "ablation_window_size.csv")
    for ws in (4, 8, 16):
        row = values[str(ws)]
        for metric in ("noc90", "miou_at_5"):
            mean, lo, hi = hand_interval(stats.per_object(m[ws], metric))
            assert float(row[metric]) == pytest.approx(mean)
            assert float(row[f"{metric} lo"]) == pytest.approx(lo)
            assert float(row[f"{metric} hi"]) == pytest.approx(hi)
    # paired against the grid's first point (window 4) by default
    paired = read_csv(out / "tables" / "paired_window_size.csv")
    assert paired["4"]["Δ noc90"] == "baseline"
    for ws in (8, 16):
        diff = stats.per_object(m[ws], "noc90") - stats.per_object(m[4], "noc90")
        mean, lo, hi = hand_interval(diff)
        row = paired[str(ws)]
        assert float(row["Δ noc90"]) == pytest.approx(mean)
        assert float(row["Δ noc90 lo"]) == pytest.approx(lo)
        assert float(row["Δ noc90 hi"]) == pytest.approx(hi)
    md = (out / "tables" / "paired_window_size.md").read_text()
    line8 = next(line for line in md.splitlines() if line.startswith("| 8 |"))
    assert "*" in line8.split("|")[2]  # window 8 is better on every object: significant
    assert "**" not in md  # a table of differences ranks nothing
    # NoC95 is at the cap for most objects: flagged, and not used to rank (no bold in it)
    lines = (out / "tables" / "ablation_window_size.md").read_text().splitlines()
    table = [line for line in lines if line.startswith("|")]
    header = [h.strip() for h in table[0].strip("|").split("|")]
    col = header.index("NoC95 (clicks)")
    cells = [line.strip("|").split("|")[col].strip() for line in table[2:5]]
    assert all(c.endswith("§") and not c.startswith("**") for c in cells), cells
    assert any("§: saturated" in line for line in lines)
    assert f"resamples of {N_OBJ} objects" in "\n".join(lines)
    report_md = (out / "report.md").read_text()
    assert "Paired differences: window_size against window_size=4" in report_md


def test_report_baseline_choice_and_bad_baseline(known_store, capsys):
    out = known_store["root"] / "report8"
    report_build.build("ws", None, out, known_store["uri"], log=False, baseline="window_size=8")
    paired = read_csv(out / "tables" / "paired_window_size.csv")
    assert paired["8"]["Δ noc90"] == "baseline" and float(paired["4"]["Δ noc90"]) > 0
    bad = known_store["root"] / "bad"
    argv = ["experiment=ws", f"mlflow.tracking_uri={known_store['uri']}", f"out={bad}", "log=false"]
    assert report_build.main([*argv, "baseline=window_size=5"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "report.baseline='window_size=5' names no point" in err
    assert "window_size=4; window_size=8; window_size=16" in err
    assert not bad.exists()


def test_sweep_refuses_a_baseline_outside_the_grid_before_anything_runs(tmp_path, capsys):
    db = tmp_path / "mlflow.db"
    argv = [
        "grid=window_size",
        "report.baseline=window_size=5",
        f"out={tmp_path / 'sweeps'}",
        f"mlflow.tracking_uri=sqlite:///{db}",
    ]
    assert sweep_cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "names no point of the grid" in err
    assert not db.exists() and not (tmp_path / "sweeps").exists()
    # a good one (leaf name, a bare value, the full key) plans fine
    cfg, spec = C.compose({"grid": "window_size", "report.baseline": "16"})
    sweep = S.expand(cfg, spec)
    points = [(t.config["model"]["window_size"],) for t in sweep.trials]
    for text in ("16", "window_size=16", "model.window_size=16"):
        assert C.baseline_point(text, ["model.window_size"], points) == {"model.window_size": 16}
    assert C.baseline_point(None, ["model.window_size"], points) == {"model.window_size": 4}


def test_report_states_the_training_recipe():
    from reports import frame
    from tests.helpers import run, runs_frame

    base = {"train.enabled": True, "train.steps": 400, "train.ts": 256, "train.lr": 0.001}
    params = {**base, "train.base_steps": 2000, "train.base_lr": 0.003}
    shared = frame.tidy(runs_frame(run(params, {"noc90": 5.0})))
    [text] = report_build.training_facts(shared)
    assert "finetunes 400 steps at ts 256 (lr 0.001)" in text
    assert "(2000 steps at ts 256, lr 0.003" in text  # no base_ts: the finetune's ts
    own_ts = frame.tidy(runs_frame(run({**params, "train.base_ts": 128}, {"noc90": 5.0})))
    [text] = report_build.training_facts(own_ts)
    assert "finetunes 400 steps at ts 256" in text and "(2000 steps at ts 128, lr 0.003" in text
    scratch = frame.tidy(runs_frame(run({**base, "train.base_steps": 0}, {"noc90": 5.0})))
    assert report_build.training_facts(scratch) == (
        "training: each trial trains 400 steps at ts 256 (lr 0.001) from scratch",
    )
    evaluated = frame.tidy(runs_frame(run({"train.enabled": False}, {"noc90": 5.0})))
    assert report_build.training_facts(evaluated) == ()
