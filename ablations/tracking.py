"""MLflow, behind a few functions: the sweep's parent run, one child run per trial, lookups.

The trial folder's ``result.json`` is the durable record; MLflow mirrors it. A trial's run is
found by its ``hrsam.trial_id`` tag under the sweep's parent, so a retried or re-imported trial
reuses its run instead of adding a duplicate. SQLite is created once by the launcher before any
job starts (concurrent first-time migrations race); every call retries with jitter on a locked
database (reference/ecosystem.md 3.7).
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

ROLE, SWEEP_ID, TRIAL_ID, GRID, LABEL, VARYING, ERROR = (
    "hrsam.role",
    "hrsam.sweep_id",
    "hrsam.trial_id",
    "hrsam.grid",
    "hrsam.label",
    "hrsam.varying",
    "hrsam.error",
)
PARENT = "mlflow.parentRunId"


def metric_key(name: str) -> str:
    """Our metric names in MLflow's alphabet: ``miou@5`` -> ``miou_at_5``."""
    return name.replace("@", "_at_")


def _retry(fn: Callable, attempts: int = 8):
    for i in range(attempts):
        try:
            return fn()
        except Exception as e:  # sqlite "database is locked", transient HTTP errors
            if i == attempts - 1:
                raise
            delay = min(10.0, 0.2 * 2**i) * (0.5 + random.random())
            log.warning("MLflow call failed (%s); retrying in %.1fs", str(e)[:200], delay)
            time.sleep(delay)
    return None


def absolute_uri(uri: str) -> str:
    """A relative ``sqlite:///mlflow.db`` made absolute, so jobs started elsewhere find it."""
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return "sqlite:///" + str(Path(uri.removeprefix("sqlite:///")).resolve())
    return uri


def client(tracking_uri: str):
    import mlflow
    from mlflow.tracking import MlflowClient

    if tracking_uri.startswith("sqlite:///"):
        Path(tracking_uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(tracking_uri)
    return MlflowClient(tracking_uri)


def experiment_id(c, name: str, artifact_root: Path | None = None) -> str:
    exp = _retry(lambda: c.get_experiment_by_name(name))
    if exp is not None:
        return exp.experiment_id
    location = artifact_root.resolve().as_uri() if artifact_root else None
    try:
        return _retry(lambda: c.create_experiment(name, artifact_location=location))
    except Exception:  # created meanwhile by another process
        return c.get_experiment_by_name(name).experiment_id


def _runs(c, exp_id: str, filter_string: str):
    return _retry(lambda: c.search_runs([exp_id], filter_string=filter_string, max_results=50000))


def start_sweep(
    tracking_uri: str,
    experiment: str,
    sweep_id: str,
    grid: str,
    params: dict,
    varying: list[str],
    artifact_root: Path,
) -> str:
    """The sweep's parent run (created once per sweep id, reused by re-runs), set RUNNING."""
    c = client(tracking_uri)
    exp_id = experiment_id(c, experiment, artifact_root)
    found = _runs(c, exp_id, f"tags.`{SWEEP_ID}` = '{sweep_id}' and tags.`{ROLE}` = 'sweep'")
    if found:
        run_id = found[0].info.run_id
        _retry(lambda: c.update_run(run_id, status="RUNNING"))
        return run_id
    tags = {ROLE: "sweep", SWEEP_ID: sweep_id, GRID: grid, VARYING: ",".join(varying)}
    run = _retry(lambda: c.create_run(exp_id, run_name=grid, tags=tags))
    _log_params(c, run.info.run_id, params)
    return run.info.run_id


def end_sweep(tracking_uri: str, run_id: str, ok: bool) -> None:
    c = client(tracking_uri)
    _retry(lambda: c.set_terminated(run_id, "FINISHED" if ok else "FAILED"))


def trial_runs(tracking_uri: str, experiment: str, sweep_id: str) -> dict[str, tuple[str, str]]:
    """{trial_id: (run_id, status)} of the sweep's trial runs."""
    c = client(tracking_uri)
    exp = _retry(lambda: c.get_experiment_by_name(experiment))
    if exp is None:
        return {}
    runs = _runs(
        c, exp.experiment_id, f"tags.`{SWEEP_ID}` = '{sweep_id}' and tags.`{ROLE}` = 'trial'"
    )
    return {r.data.tags[TRIAL_ID]: (r.info.run_id, r.info.status) for r in runs}


def _log_params(c, run_id: str, params: dict) -> None:
    from mlflow.entities import Param

    items = [Param(k, _param_value(v)) for k, v in sorted(params.items())]
    for i in range(0, len(items), 100):  # MLflow: at most 100 params per batch
        _retry(lambda chunk=items[i : i + 100]: c.log_batch(run_id, params=chunk))


def _param_value(v) -> str:
    s = json.dumps(v) if isinstance(v, list | dict) else str(v)
    return s[:6000]


def log_trial(
    tracking_uri: str,
    experiment: str,
    parent_run_id: str,
    record: dict,
    folder: Path | None,
) -> str:
    """Mirrors one trial record (``result.json`` content) into its child run; returns the run id.

    ``record`` holds ``trial_id, sweep_id, grid, label, status`` ("FINISHED" or "FAILED"),
    ``params`` (flat), ``metrics`` (flat; ``miou@k`` also logged as the step series ``miou``),
    ``tags`` (provenance) and ``error`` (the traceback, for failures). ``folder``'s files become
    the run's artifacts.
    """
    from mlflow.entities import Metric, RunTag

    c = client(tracking_uri)
    exp_id = experiment_id(c, experiment)
    found = _runs(
        c,
        exp_id,
        f"tags.`{TRIAL_ID}` = '{record['trial_id']}' and tags.`{PARENT}` = '{parent_run_id}'",
    )
    tags = {
        PARENT: parent_run_id,
        ROLE: "trial",
        TRIAL_ID: record["trial_id"],
        SWEEP_ID: record["sweep_id"],
        GRID: record["grid"],
        LABEL: record["label"],
        **{k: str(v)[:5000] for k, v in record.get("tags", {}).items()},
    }
    if record["status"] == "FAILED":
        lines = (record.get("error") or "failed").strip().splitlines()
        tags[ERROR] = lines[-1][:500]
    if found:
        run_id = found[0].info.run_id
        _retry(lambda: c.update_run(run_id, status="RUNNING"))
    else:
        run = _retry(lambda: c.create_run(exp_id, run_name=record["label"], tags=tags))
        run_id = run.info.run_id
    _retry(lambda: c.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()]))
    _log_params(c, run_id, record["params"])
    now = int(time.time() * 1000)
    metrics = [
        Metric(metric_key(k), float(v), now, 0)
        for k, v in record.get("metrics", {}).items()
        if v is not None and math.isfinite(float(v))
    ]
    metrics += [
        Metric("miou", float(v), now, k)
        for k, v in enumerate(record.get("miou_curve", []), start=1)
    ]
    for i in range(0, len(metrics), 1000):
        _retry(lambda chunk=metrics[i : i + 1000]: c.log_batch(run_id, metrics=chunk))
    if folder is not None and folder.is_dir():
        _retry(lambda: c.log_artifacts(run_id, str(folder)))
    if record["status"] == "FAILED" and record.get("error"):
        _retry(lambda: c.log_text(run_id, record["error"], "traceback.txt"))
    _retry(lambda: c.set_terminated(run_id, record["status"]))
    return run_id


def log_report(tracking_uri: str, parent_run_id: str, folder: Path) -> None:
    c = client(tracking_uri)
    _retry(lambda: c.log_artifacts(parent_run_id, str(folder), "report"))
