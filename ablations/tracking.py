"""MLflow, behind a few functions: the sweep's parent run, one child run per trial, lookups.

The trial folder's ``result.json`` is the durable record; MLflow mirrors it. A trial's run is
found by its ``hrsam.trial_id`` tag under the sweep's parent, so a retried or re-imported trial
reuses its run instead of adding a duplicate. SQLite is created once by the launcher before any
job starts (concurrent first-time migrations race); every call is retried with jittered back-off
on the transient errors alone (`transient`: SQLite's "database is locked", a server's 5xx, a lost
connection) and fails at once on anything else.
"""

from __future__ import annotations

import fcntl
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path

import tenacity

from ablations import record as R
from ablations.record import TrialRecord
from hrsam import names
from hrsam.app.mlflow_trials import try_command

log = logging.getLogger(__name__)


ATTEMPTS = 8


def transient(e: BaseException) -> bool:
    """The MLflow failures worth another try: SQLite's "database is locked" (one writer at a
    time), a server's 5xx, a refused or dropped connection, a timeout. Anything else (a bad
    parameter, an unknown run, a 4xx) fails at once."""
    text = str(e).lower()
    if "database is locked" in text or "database table is locked" in text:
        return True
    if isinstance(e, ConnectionError | TimeoutError):
        return True
    status = getattr(getattr(e, "response", None), "status_code", None)
    if isinstance(status, int):
        return status >= 500
    code = getattr(e, "error_code", "")  # MlflowException: the server's answer (INTERNAL_ERROR,
    if code in ("TEMPORARILY_UNAVAILABLE", "REQUEST_LIMIT_EXCEEDED"):  # its default, is not one)
        return True
    return any(
        m in text
        for m in ("connection refused", "connection reset", "connection aborted", "max retries",
                  "timed out", "status code 50", "bad gateway", "service unavailable")
    )  # fmt: skip


def _log_retry(state) -> None:
    log.warning(
        "MLflow call failed (%s); retry %d in %.1fs",
        str(state.outcome.exception())[:200],
        state.attempt_number,
        state.next_action.sleep,
    )


def _retry(fn: Callable, attempts: int = ATTEMPTS):
    """``fn()``, retried with jittered exponential back-off (0.2 s doubling, at most 10 s) on
    `transient` errors only, ``attempts`` tries in all; the last error is raised as itself."""
    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_exception(transient),
        stop=tenacity.stop_after_attempt(attempts),
        wait=tenacity.wait_random_exponential(multiplier=0.2, max=10.0),
        before_sleep=_log_retry,
        reraise=True,
    )
    return retrying(fn)


def absolute_uri(uri: str) -> str:
    """A relative ``sqlite:///mlflow.db`` made absolute, so jobs started elsewhere find it."""
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return "sqlite:///" + str(Path(uri.removeprefix("sqlite:///")).resolve())
    return uri


def client(tracking_uri: str):
    """An MLflow client of ``tracking_uri``. A ``sqlite:///`` store is opened (and created, on
    first use) under an exclusive lock on ``<db>.lock``: processes that open a new store at once
    (two pretrain runs started side by side) would otherwise race on its first migration."""
    import mlflow
    from mlflow.tracking import MlflowClient

    mlflow.set_tracking_uri(tracking_uri)
    if not tracking_uri.startswith("sqlite:///"):
        return MlflowClient(tracking_uri)
    db = Path(tracking_uri.removeprefix("sqlite:///"))
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(db.with_name(db.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        c = MlflowClient(tracking_uri)
        _retry(lambda: c.search_experiments(max_results=1))  # the store's tables exist now
    return c


def experiment_id(c, name: str, artifact_root: Path | None = None) -> str:
    exp = _retry(lambda: c.get_experiment_by_name(name))
    if exp is not None:
        return exp.experiment_id
    location = artifact_root.resolve().as_uri() if artifact_root else None
    tags = dict([names.EXPERIMENT_KIND])  # opens on the runs table, not the GenAI overview
    try:
        return _retry(lambda: c.create_experiment(name, artifact_location=location, tags=tags))
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
    command: str = "",
) -> str:
    """The sweep's parent run (created once per sweep id, reused by re-runs), set RUNNING;
    ``command`` (the sweep's command line) becomes its description."""
    c = client(tracking_uri)
    exp_id = experiment_id(c, experiment, artifact_root)
    _retry(lambda: c.set_experiment_tag(exp_id, *names.EXPERIMENT_KIND))  # older experiments too
    found = _runs(
        c,
        exp_id,
        f"tags.`{names.SWEEP_ID}` = '{sweep_id}' and tags.`{names.ROLE}` = '{R.ROLE_SWEEP}'",
    )
    if found:
        run_id = found[0].info.run_id
        _retry(lambda: c.update_run(run_id, status="RUNNING"))
        return run_id
    tags = R.parent_tags(sweep_id, grid, varying)
    if command:
        tags[names.NOTE] = command
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
        c,
        exp.experiment_id,
        f"tags.`{names.SWEEP_ID}` = '{sweep_id}' and tags.`{names.ROLE}` = '{R.ROLE_TRIAL}'",
    )
    return {
        r.data.tags[names.TRIAL_ID]: (r.info.run_id, r.data.tags.get(names.STATUS, r.info.status))
        for r in runs
    }


def _log_params(c, run_id: str, params: dict) -> None:
    from mlflow.entities import Param

    items = [Param(k, str(v)[:6000]) for k, v in sorted(params.items())]
    for i in range(0, len(items), 100):  # MLflow: at most 100 params per batch
        _retry(lambda chunk=items[i : i + 100]: c.log_batch(run_id, params=chunk))


def log_trial(
    tracking_uri: str,
    experiment: str,
    parent_run_id: str,
    record: TrialRecord,
    folder: Path | None,
) -> str:
    """Mirrors one trial record into its child run (found by trial id under the parent, else
    created); returns the run id. Params, tags and metric names come from the record
    (`ablations.record`); mIoU@k is also the step series ``miou``; ``folder``'s files become
    the run's artifacts and a failure's traceback ``traceback.txt``."""
    from mlflow.entities import Metric, RunTag

    c = client(tracking_uri)
    run_id = _trial_run(c, experiment, parent_run_id, record)
    payload = record.mlflow_payload(parent_run_id)
    if record.ok:  # the command that opens this trial's model in the app
        payload.tags[names.TRY] = try_command(tracking_uri, experiment, record.trial_id)
    _retry(lambda: c.log_batch(run_id, tags=[RunTag(k, v) for k, v in payload.tags.items()]))
    _log_params(c, run_id, payload.params)
    now = int(time.time() * 1000)
    metrics = [Metric(k, v, now, 0) for k, v in payload.metrics.items()]
    metrics += [Metric(name, v, now, step) for name, v, step in payload.series]
    for i in range(0, len(metrics), 1000):
        _retry(lambda chunk=metrics[i : i + 1000]: c.log_batch(run_id, metrics=chunk))
    if folder is not None and folder.is_dir():
        _retry(lambda: c.log_artifacts(run_id, str(folder)))
    if record.failed and record.error:
        _retry(lambda: c.log_text(run_id, record.error, "traceback.txt"))
    _retry(lambda: c.set_terminated(run_id, R.MLFLOW_STATUS[record.status]))
    return run_id


def start_trial(tracking_uri: str, experiment: str, parent_run_id: str, record: TrialRecord) -> str:
    """The trial's child run as it starts: RUNNING, with its tags and requested params; the
    same run (found by trial id) is reused by a retry and finished by `log_trial`."""
    from mlflow.entities import RunTag

    c = client(tracking_uri)
    run_id = _trial_run(c, experiment, parent_run_id, record, running=True)
    tags = record.mlflow_tags(parent_run_id, running=True)
    _retry(lambda: c.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()]))
    return run_id


class SeriesLogger:
    """Step series (training loss, learning rate, evaluation progress) for a RUNNING run,
    sent in batches at most every ``every_s`` seconds; never raises (the trial goes on)."""

    def __init__(self, tracking_uri: str, run_id: str | None, every_s: float = 2.0) -> None:
        self.uri, self.run_id, self.every_s = tracking_uri, run_id, every_s
        self.pending: list = []
        self.last = time.monotonic()
        self.client = None

    def __call__(self, step: int, values: dict[str, float], force: bool = False) -> None:
        from mlflow.entities import Metric

        if self.run_id is None:
            return
        now = int(time.time() * 1000)
        self.pending += [Metric(k, float(v), now, step) for k, v in values.items()]
        if force or time.monotonic() - self.last >= self.every_s:
            self.flush()

    def flush(self) -> None:
        if not self.pending or self.run_id is None:
            return
        batch, self.pending, self.last = self.pending, [], time.monotonic()
        try:
            if self.client is None:  # one client (one store connection) for the whole trial
                self.client = client(self.uri)
            for i in range(0, len(batch), 1000):
                self.client.log_batch(self.run_id, metrics=batch[i : i + 1000])
        except Exception as e:  # the trial folder stays the record
            log.warning("MLflow: could not log a step series (%s)", str(e)[:200])


def _trial_run(
    c, experiment: str, parent_run_id: str, record: TrialRecord, running: bool = False
) -> str:
    exp_id = experiment_id(c, experiment)
    found = _runs(
        c,
        exp_id,
        f"tags.`{names.TRIAL_ID}` = '{record.trial_id}' "
        f"and tags.`{names.PARENT}` = '{parent_run_id}'",
    )
    if found:
        run_id = found[0].info.run_id
        _retry(lambda: c.update_run(run_id, status="RUNNING"))
        return run_id
    tags = record.mlflow_tags(parent_run_id, running)
    return _retry(lambda: c.create_run(exp_id, run_name=record.label, tags=tags)).info.run_id


# the metrics the sweep's MLflow page shows as columns, beside the sweep's varying params
VIEW_METRICS = (names.NOC90, names.MIOU1, names.MIOU5, names.CLICK_GAIN, names.ENCODER_MS)
VIEW_TAG = "mlflow.sharedViewState."  # MLflow's saved views: an experiment tag per view


def runs_page(
    tracking_uri: str, experiment: str, sweep_id: str | None = None, varying: list[str] = ()
) -> str:
    """The UI's path to the experiment's trial runs, best NoC90 first. MLflow 3's UI opens on
    its GenAI overview unless the model-training view is asked for (``workflowType``), and
    folds child runs under their parent unless the table is filtered and sorted by other than
    date. With ``sweep_id``: a saved view of the sweep (MLflow's ``viewStateShareKey``, an
    experiment tag) whose columns are the sweep's ``varying`` params and `VIEW_METRICS`, so the
    page shows the numbers without opening a run."""
    from urllib.parse import quote, urlencode

    c = client(tracking_uri)
    exp = _retry(lambda: c.get_experiment_by_name(experiment))
    if exp is None:
        return "#/experiments?workflowType=machine_learning"
    query = {
        "workflowType": "machine_learning",
        "searchFilter": f"tags.`{names.ROLE}` = '{R.ROLE_TRIAL}'",
        "orderByKey": f"metrics.`{names.NOC90}`",
        "orderByAsc": "true",
    }
    if sweep_id is None:
        return f"#/experiments/{exp.experiment_id}/runs?{urlencode(query, quote_via=quote)}"
    key = f"hrsam-{sweep_id}"
    state = {
        "searchFilter": f"{query['searchFilter']} and tags.`{names.SWEEP_ID}` = '{sweep_id}'",
        "orderByKey": query["orderByKey"],
        "orderByAsc": True,
        "selectedColumns": [f"params.`{k}`" for k in varying]
        + [f"metrics.`{m}`" for m in VIEW_METRICS],
    }
    _retry(lambda: c.set_experiment_tag(exp.experiment_id, VIEW_TAG + key, json.dumps(state)))
    view = {"workflowType": "machine_learning", "viewStateShareKey": key}
    return f"#/experiments/{exp.experiment_id}/runs?{urlencode(view, quote_via=quote)}"
