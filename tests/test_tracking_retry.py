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
