"""The trial record: one schema for ``result.json``, the MLflow runs and the reports
(docs/architecture.md).

Every tag, status and metric name a trial writes or a report reads is spelled here and nowhere
else. ``ablations.trial`` fills a `TrialRecord`; ``ablations.tracking`` and ``ablations.sync``
mirror it to MLflow; ``reports`` and ``benchmarks.report_build`` read MLflow back through the same
names. Pure Python: importable without torch or mlflow.

Statuses: ``FINISHED``; ``FAILED`` with the traceback (the trial raised, or its job died);
``UNSUPPORTED`` with the reason (the job found that its device cannot run the variant: the
kernel's or scan backend's own ``support()`` reasons). MLflow has no status for the last, so
such a run ends ``FINISHED`` in MLflow and carries ``hrsam.status=UNSUPPORTED`` and, in
``hrsam.error``, ``unsupported: <reason>``, which is what the reports show.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

# Metric, tag and parameter names are `hrsam.names`' (one spelling each, the same in result.json,
# MLflow and the reports); the ones this module's readers use are re-exported here.
from hrsam.names import (
    ERROR,
    GRID,
    LABEL,
    MIOU_SERIES,
    PARENT,
    REQUESTED,
    ROLE,
    STATUS,
    SWEEP_ID,
    TRIAL_ID,
    VARYING,
    canonical,
    clicks_of,
)

FINISHED, FAILED, UNSUPPORTED = "FINISHED", "FAILED", "UNSUPPORTED"
STATUSES = (FINISHED, FAILED, UNSUPPORTED)
MLFLOW_STATUS = {FINISHED: "FINISHED", FAILED: "FAILED", UNSUPPORTED: "FINISHED"}
ROLE_SWEEP, ROLE_TRIAL = "sweep", "trial"


# a timing taken while another trial of the sweep ran on the same machine (provenance
# ``timing_shared``) is marked the same way in the console table, results.md and the report
SHARED_MARK = "‡"
SHARED_NOTE = "timed while another trial ran on the same machine (shared cores: not comparable)"


def timing_shared(record: TrialRecord) -> bool:
    return record.provenance.get("timing_shared") == "True"


EMPTY_MIOU = 0.01  # below this mIoU after every click a model "predicts nothing"


def predicts_nothing(metrics: dict) -> bool:
    """Whether the mIoU after every click is below `EMPTY_MIOU`: a training that did not
    learn, not a measurement of a model."""
    values = [v for k, v in metrics.items() if clicks_of(k) is not None and v == v]
    return bool(values) and max(values) < EMPTY_MIOU


@dataclass
class TrialRecord:
    """One trial's outcome; ``result.json`` is its durable copy (`save`, `load`)."""

    trial_id: str
    sweep_id: str
    grid: str
    experiment: str
    label: str
    status: str = FINISHED
    params: dict = field(default_factory=dict)  # the config as requested (flat, dotted keys)
    resolved: dict = field(default_factory=dict)  # what the job ran with (flat, dotted keys)
    metrics: dict = field(default_factory=dict)
    miou_curve: list = field(default_factory=list)
    provenance: dict = field(default_factory=dict)  # git, versions, device, host, job, threads
    error: str | None = None  # FAILED: the traceback
    reason: str | None = None  # UNSUPPORTED: why this device cannot run the trial
    wall_s: float | None = None
    mlflow_run_id: str | None = None

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status={self.status!r}; valid: {', '.join(STATUSES)}")

    # -- result.json ---------------------------------------------------------------------------

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, default=str)

    @classmethod
    def from_dict(cls, d: dict) -> TrialRecord:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    @classmethod
    def load(cls, folder: Path) -> TrialRecord | None:
        """The record in ``folder/result.json``, or None when there is none (or it is torn)."""
        try:
            record = cls.from_dict(json.loads((Path(folder) / "result.json").read_text()))
        except (OSError, ValueError, TypeError):
            return None
        record.metrics = {canonical(k): v for k, v in record.metrics.items()}  # older records
        return record

    def save(self, folder: Path) -> None:
        (Path(folder) / "result.json").write_text(self.to_json())

    # -- what people read ----------------------------------------------------------------------

    @property
    def ok(self) -> bool:
        return self.status == FINISHED

    @property
    def failed(self) -> bool:
        return self.status == FAILED

    def headline(self) -> str:
        """One line: ``unsupported: <reason>`` or the traceback's last line."""
        if self.status == UNSUPPORTED:
            return f"unsupported: {self.reason}"
        if self.status == FAILED:
            lines = (self.error or "failed").strip().splitlines()
            return lines[-1] if lines else "failed"
        return "finished"

    # -- MLflow --------------------------------------------------------------------------------

    def mlflow_params(self) -> dict[str, str]:
        """The resolved config (what ran) under its dotted keys, plus ``requested.<key>`` where
        the request differs from what the job resolved (``scan=auto`` -> ``cpu``)."""
        out = {**self.params, **self.resolved}
        for key, value in self.params.items():
            if key in self.resolved and self.resolved[key] != value:
                out[REQUESTED + key] = value
        return {k: _param_text(v) for k, v in out.items()}

    def mlflow_tags(self, parent_run_id: str, running: bool = False) -> dict[str, str]:
        tags = {
            PARENT: parent_run_id,
            ROLE: ROLE_TRIAL,
            TRIAL_ID: self.trial_id,
            SWEEP_ID: self.sweep_id,
            GRID: self.grid,
            LABEL: self.label,
            STATUS: "RUNNING" if running else self.status,
            **{k: str(v)[:5000] for k, v in self.provenance.items()},
        }
        if self.status != FINISHED:
            tags[ERROR] = self.headline()[:500]
        return tags

    def mlflow_payload(self, parent_run_id: str) -> MlflowPayload:
        """The finished run's tags, params, metrics and the mIoU-per-click series."""
        series = [(MIOU_SERIES, float(v), k) for k, v in enumerate(self.miou_curve, start=1)]
        return MlflowPayload(
            self.mlflow_tags(parent_run_id),
            self.mlflow_params(),
            self.mlflow_metrics(),
            series,
        )

    def mlflow_metrics(self) -> dict[str, float]:
        """The finite metrics (their names are MLflow's: `hrsam.names`)."""
        return {
            k: float(v)
            for k, v in self.metrics.items()
            if v is not None and math.isfinite(float(v))
        }


def flatten(cfg: dict, prefix: str = "") -> dict[str, Any]:
    """{"model": {"preset": ...}} -> {"model.preset": ...} (MLflow params, table columns)."""
    out = {}
    for k, v in cfg.items():
        if isinstance(v, dict) and v:
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


def started(spec, sweep_id: str, grid: str, experiment: str) -> TrialRecord:
    """The record of a trial as it starts: its ids and the requested config as ``params``."""
    return TrialRecord(
        spec.trial_id, sweep_id, grid, experiment, spec.label, params=flatten(spec.config)
    )


def finish(
    record: TrialRecord, resolved: dict, metrics: dict, curve: list, facts: dict
) -> TrialRecord:
    """The record's results, in one place: the resolved config (flat), metrics, the mIoU curve
    and provenance entries."""
    record.resolved = flatten(resolved)
    record.metrics.update(metrics)
    record.miou_curve = list(curve)
    record.provenance.update(facts)
    return record


@dataclass(frozen=True)
class MlflowPayload:
    """Everything a trial's MLflow run receives, built from the record in one place."""

    tags: dict[str, str]
    params: dict[str, str]
    metrics: dict[str, float]  # finite values, step 0
    series: list[tuple[str, float, int]]  # (name, value, step): mIoU after k clicks at step k


def _param_text(v) -> str:
    s = json.dumps(v) if isinstance(v, list | dict) else str(v)
    return s[:6000]


def parent_tags(sweep_id: str, grid: str, varying: list[str]) -> dict[str, str]:
    return {ROLE: ROLE_SWEEP, SWEEP_ID: sweep_id, GRID: grid, VARYING: ",".join(varying)}
