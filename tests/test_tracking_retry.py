"""The MLflow retry: which errors it retries (named, `ablations.tracking.transient`) and that it
gives up on the rest at once, raising the error itself."""

from __future__ import annotations

import sqlite3

import pytest
import requests
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import (
    INVALID_PARAMETER_VALUE,
    RESOURCE_DOES_NOT_EXIST,
    TEMPORARILY_UNAVAILABLE,
)

from ablations import tracking


def http_error(status: int) -> requests.HTTPError:
    response = requests.Response()
    response.status_code = status
    return requests.HTTPError(f"{status} error", response=response)


@pytest.mark.parametrize(
    ("error", "retried"),
    [
        (sqlite3.OperationalError("database is locked"), True),
        (MlflowException("(sqlite3.OperationalError) database is locked"), True),
        (http_error(503), True),
        (http_error(500), True),
        (http_error(404), False),
        (ConnectionRefusedError(111, "Connection refused"), True),
        (requests.ConnectionError("Max retries exceeded with url: /api/2.0/mlflow"), True),
        (MlflowException("Run 'x' not found", error_code=RESOURCE_DOES_NOT_EXIST), False),
        (MlflowException("bad param", error_code=INVALID_PARAMETER_VALUE), False),
        (MlflowException("try later", error_code=TEMPORARILY_UNAVAILABLE), True),
        (MlflowException("a bug"), False),  # MLflow's default code, INTERNAL_ERROR
        (ValueError("not a number"), False),
    ],
)
def test_transient_errors_are_named(error, retried):
    assert tracking.transient(error) is retried


def test_retry_retries_a_locked_database_then_succeeds(monkeypatch):
    monkeypatch.setattr("tenacity.nap.time.sleep", lambda s: None)
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise sqlite3.OperationalError("database is locked")
        return "ok"

    assert tracking._retry(flaky) == "ok" and len(calls) == 3


def test_retry_gives_up_at_once_on_anything_else_and_after_the_last_attempt(monkeypatch):
    monkeypatch.setattr("tenacity.nap.time.sleep", lambda s: None)
    calls = []

    def wrong():
        calls.append(1)
        raise MlflowException("bad param", error_code=INVALID_PARAMETER_VALUE)

    with pytest.raises(MlflowException, match="bad param"):
        tracking._retry(wrong)
    assert len(calls) == 1
    calls.clear()

    def locked():
        calls.append(1)
        raise sqlite3.OperationalError("database is locked")

    with pytest.raises(sqlite3.OperationalError, match="locked"):
        tracking._retry(locked, attempts=4)
    assert len(calls) == 4


def _first_client(uri: str, barrier, queue) -> None:
    """One process's first use of a store: imports MLflow, waits for the others, creates the
    client and an experiment; puts the error's first line, or None."""
    import mlflow.tracking  # noqa: F401  (the slow part, before the start line)

    barrier.wait(timeout=120)
    try:
        c = tracking.client(uri)
        tracking.experiment_id(c, "race")
        queue.put(None)
    except Exception as e:  # reported to the test
        queue.put(str(e).splitlines()[0][:200])


def test_processes_creating_a_new_sqlite_store_at_once_all_succeed(tmp_path):
    """Two pretrain runs started side by side on a fresh ``sqlite:///`` store used to race on
    MLflow's first migration (``table _alembic_tmp_experiments already exists``): the client
    now creates the store under a file lock, so every process gets a working store."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    queue, barrier = ctx.Queue(), ctx.Barrier(4)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    procs = [ctx.Process(target=_first_client, args=(uri, barrier, queue)) for _ in range(4)]
    for p in procs:
        p.start()
    errors = [queue.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    assert errors == [None] * len(procs)
    c = tracking.client(uri)
    assert len(c.search_experiments(filter_string="name = 'race'")) == 1
