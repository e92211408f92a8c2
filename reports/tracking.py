"""The reports' only contact with MLflow: read an experiment's runs once, log a report folder as
artifacts of a sweep's parent run (``report/``). Errors a user can fix raise `ReportError` with a
one-line message (the CLI prints it and exits 2)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from hrsam.interactive.evaluate import read_ious


class ReportError(ValueError):
    """Bad input to the report: unknown experiment or sweep, no finished runs, no store."""


def resolve_uri(tracking_uri: str | None) -> str:
    """The tracking URI to read: ``tracking_uri``, else MLflow's (``MLFLOW_TRACKING_URI`` or
    ``sqlite:///mlflow.db``). A SQLite file that does not exist is an error, not a new store."""
    import mlflow

    uri = tracking_uri or mlflow.get_tracking_uri()
    if uri.startswith("sqlite:///"):
        path = uri.removeprefix("sqlite:///").split("?", 1)[0]
        if path and path != ":memory:" and not Path(path).exists():
            raise ReportError(f"no MLflow database at {path} (mlflow.tracking_uri={uri})")
    return uri


def load_runs(experiment: str, tracking_uri: str) -> pd.DataFrame:
    """Every run of ``experiment`` (parents and trials) as ``mlflow.search_runs`` returns them."""
    from mlflow import MlflowClient
    from mlflow.entities import ViewType

    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        names = sorted(e.name for e in client.search_experiments(view_type=ViewType.ACTIVE_ONLY))
        raise ReportError(
            f"unknown experiment {experiment!r}; experiments in {tracking_uri}: "
            + (", ".join(names) or "none")
        )
    import mlflow

    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(tracking_uri)  # search_runs reads the global URI
    try:
        return mlflow.search_runs(experiment_ids=[exp.experiment_id], max_results=100_000)
    finally:
        mlflow.set_tracking_uri(previous)


def log_report(parent_run_id: str, out_dir: Path, tracking_uri: str) -> None:
    """Logs ``out_dir`` under ``report/`` of the sweep's parent run."""
    from mlflow import MlflowClient

    MlflowClient(tracking_uri).log_artifacts(parent_run_id, str(out_dir), "report")


IOUS = "ious.csv"  # a trial's (objects x clicks) IoU matrix, one of its run's artifacts


def load_ious(run_ids, tracking_uri: str) -> dict[str, tuple[list[str], np.ndarray]]:
    """``run_id -> (object names, IoU matrix)`` from each run's ``ious.csv`` artifact; runs
    without one (failed, unsupported, logged by older versions) are left out."""
    return _load_artifact(run_ids, tracking_uri, IOUS, read_ious)


def load_galleries(run_ids, tracking_uri: str) -> dict[str, list]:
    """``run_id -> gallery items`` (`hrsam.interactive.evaluate.read_gallery`) from each run's
    ``gallery.npz`` artifact; runs without one are left out."""
    from hrsam.interactive.evaluate import GALLERY, read_gallery

    return _load_artifact(run_ids, tracking_uri, GALLERY, lambda p: read_gallery(p) or None)


def _load_artifact(run_ids, tracking_uri: str, name: str, read) -> dict:
    import tempfile

    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri)
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for run_id in run_ids:
            try:
                path = client.download_artifacts(run_id, name, f"{tmp}/{run_id}")
            except (MlflowException, OSError):
                continue
            value = read(path)
            if value is not None:
                out[run_id] = value
    return out
