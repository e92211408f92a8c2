"""Trials listed from an MLflow store (``python -m hrsam.app --mlflow URI --experiment NAME
[--trial ID]``): each finished trial run (tags ``hrsam.role=trial``, ``hrsam.status=FINISHED``)
becomes a `hrsam.app.models.ModelEntry` from its params (what ran: the record's flat keys, the
same as ``result.json``'s ``resolved``), its label tag and its ``weights`` provenance tag.
`try_command` spells the command line that opens one trial; the sweep writes it on each trial's
run as the ``hrsam.try`` tag (`hrsam.names.TRY`). MLflow is imported inside the functions only:
the app needs it with ``--mlflow`` alone, and the library imports without it.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlparse

from hrsam import names

if TYPE_CHECKING:
    from hrsam.app.models import ModelEntry

DEFAULT_STORE = "sqlite:///mlflow.db"  # a sweep's default mlflow.tracking_uri
TRIAL_ROLE, FINISHED = "trial", "FINISHED"  # the values ablations.record writes in those tags


def default_store() -> str:
    """``$MLFLOW_TRACKING_URI``, else the sweep's default ``sqlite:///mlflow.db``."""
    return os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_STORE


def try_command(uri: str, experiment: str, trial_id: str) -> str:
    """The command line that opens one trial of an MLflow experiment in the app."""
    argv = ["python", "-m", "hrsam.app", "--mlflow", uri, "--experiment", experiment]
    return shlex.join([*argv, "--trial", trial_id])


def local_path(uri: str) -> Path | None:
    """The file behind a local store or artifact URI (``sqlite:///x.db``, ``file:///d``, a
    plain folder); None for a server."""
    if uri.startswith("sqlite:///"):
        return Path(uri.removeprefix("sqlite:///"))
    if uri.startswith("file:"):
        return Path(unquote(urlparse(uri).path))
    return None if "://" in uri else Path(uri)


def open_store(uri: str):
    """An `mlflow.tracking.MlflowClient` on ``uri``; `ValueError` (one line) for a local store
    that does not exist, which MLflow would otherwise create empty."""
    path = local_path(uri)
    if path is not None and not path.exists():
        raise ValueError(
            f"MLflow store {uri} does not exist ({path.resolve()}); give the sweep's "
            "mlflow.tracking_uri, e.g. --mlflow sqlite:///mlflow.db where the sweep ran"
        )
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def _experiments(client, uri: str, name: str | None) -> list:
    found = client.search_experiments()
    if name is None:
        return found
    for e in found:
        if e.name == name:
            return [e]
    listed = ", ".join(sorted(e.name for e in found)) or "none"
    raise ValueError(f"experiment {name!r} not found in {uri}; experiments: {listed}")


def trials(uri: str, experiment: str | None = None) -> list[ModelEntry]:
    """The finished trials of ``experiment`` (every experiment: None) in the store at ``uri``
    whose weights file exists, by experiment and label. A trial's data is looked up from its
    weights, its run's artifacts and the store's folder (`hrsam.app.models.trial_data`)."""
    from hrsam.app.models import WEIGHTS, trial_entry

    client = open_store(uri)
    exps = {e.experiment_id: e.name for e in _experiments(client, uri, experiment)}
    if not exps:
        return []
    query = f"tags.`{names.ROLE}` = '{TRIAL_ROLE}' and tags.`{names.STATUS}` = '{FINISHED}'"
    runs = client.search_runs(list(exps), filter_string=query, max_results=50000)
    store = local_path(uri)
    out = []
    for run in runs:
        tags = run.data.tags
        trial_id = tags.get(names.TRIAL_ID)
        if not trial_id:
            continue
        art = run.info.artifact_uri
        anchors = [p.parent for p in (local_path(art) if art else None, store) if p is not None]
        label = f"{exps[run.info.experiment_id]}: {tags.get(names.LABEL, trial_id)}"
        entry = trial_entry(trial_id, label, run.data.params, tags.get(WEIGHTS), anchors)
        if entry is not None:
            out.append(entry)
    return sorted(out, key=lambda m: m.label)
