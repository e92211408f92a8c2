"""Metric names are spelled once (`hrsam.names`): no module spells one itself, every metric a
trial records is declared there, one spelling from the record to MLflow, older records read."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from hrsam import names

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("ablations", "reports", "benchmarks", "hrsam")
# names that are also words of other vocabularies: MLflow's "params" section of a run, the
# config key train.base_steps, the attention benchmark's GFLOP/s column (a rate, not a count)
AMBIGUOUS = {names.PARAMS, names.BASE_STEPS, names.GFLOPS}


def _literals(path: Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            yield node.lineno, node.value


def test_no_module_spells_a_metric_name_but_names():
    found = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if path == ROOT / "hrsam" / "names.py":
                continue
            for line, text in _literals(path):
                if " " in text:  # prose (docstrings, messages) may name a metric
                    continue
                spelled = (text in names.METRICS and text not in AMBIGUOUS) or any(
                    part in text for part in ("miou@", "miou_at_")
                )
                if spelled:
                    found.append(f"{path.relative_to(ROOT)}:{line}: {text!r}")
    assert not found, "metric names spelled outside hrsam/names.py:\n" + "\n".join(found)


def test_names_by_hand():
    assert names.miou_at(5) == "miou_at_5" and names.label("miou_at_5") == "miou@5"
    assert names.clicks_of("miou_at_12") == 12 and names.clicks_of("miou@3") == 3
    assert names.clicks_of("noc90") is None and names.label("noc90") == "noc90"
    assert names.canonical("miou@5") == "miou_at_5" and names.canonical("nof95") == "nof95"
    assert names.threshold_of("nof85") == ("nof", 85) and names.threshold_of("biou") is None
    assert names.is_count("nof90") and not names.is_count("noc90")
    assert names.interval("click_gain") == ("click_gain_lo", "click_gain_hi")
    assert names.declared("miou_at_7") and not names.declared("miou@7")
    assert not names.declared("noc80") and names.declared("oracle_gain")


def test_a_record_written_before_names_reads_in_todays_spelling(tmp_path):
    from ablations.record import TrialRecord

    old = {"trial_id": "t", "sweep_id": "s", "grid": "g", "experiment": "e", "label": "l"}
    old["metrics"] = {"miou@1": 0.5, "miou@5": 0.7, "noc90": 4.0}
    (tmp_path / "result.json").write_text(json.dumps(old))
    record = TrialRecord.load(tmp_path)
    assert record.metrics == {"miou_at_1": 0.5, "miou_at_5": 0.7, "noc90": 4.0}
    assert record.mlflow_metrics() == record.metrics


@pytest.mark.slow
def test_every_metric_a_trial_records_is_declared_and_reaches_mlflow_under_its_name(
    tmp_path, monkeypatch
):
    import mlflow

    from ablations import sweep
    from ablations.record import TrialRecord
    from tests.helpers import DEBUG_MICRO as MICRO
    from tests.helpers import with_keys

    monkeypatch.chdir(tmp_path)
    base = ["train.base_steps=2", "train.base_ts=32"]  # the base training's metrics too
    args = ["grid=window_size", "model.window_size=4", *with_keys(MICRO, *base)]
    assert sweep.main(args) == 0
    [folder] = (tmp_path / "outputs/sweeps/window_size/trials").iterdir()
    record = TrialRecord.load(folder)
    assert record.ok and names.MIOU5 not in record.metrics  # 2 clicks in MICRO
    undeclared = [k for k in record.metrics if not names.declared(k)]
    assert not undeclared, f"recorded but not declared in hrsam.names: {undeclared}"
    for family in (names.QUALITY_METRICS, names.CLICK_USE_METRICS, names.TRAIN_METRICS):
        assert set(family) <= set(record.metrics)
    assert {names.MIOU1, names.ENCODER_MS, names.SPC_S} <= set(record.metrics)
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    [run] = mlflow.search_runs(
        experiment_names=["window_size"],
        filter_string=f"tags.`{names.TRIAL_ID}` = '{record.trial_id}'",
        output_format="list",
    )
    assert set(record.mlflow_metrics()) <= set(run.data.metrics)
    extra = set(run.data.metrics) - set(record.mlflow_metrics())
    assert extra <= set(names.SERIES) and names.MIOU_SERIES in extra
