"""The trial record: one schema for ``result.json``, the MLflow runs and the reports (DESIGN.md 3).

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
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

FINISHED, FAILED, UNSUPPORTED = "FINISHED", "FAILED", "UNSUPPORTED"
STATUSES = (FINISHED, FAILED, UNSUPPORTED)
MLFLOW_STATUS = {FINISHED: "FINISHED", FAILED: "FAILED", UNSUPPORTED: "FINISHED"}
ROLE_SWEEP, ROLE_TRIAL = "sweep", "trial"

# MLflow tags
ROLE = "hrsam.role"
SWEEP_ID = "hrsam.sweep_id"
TRIAL_ID = "hrsam.trial_id"
GRID = "hrsam.grid"
LABEL = "hrsam.label"
VARYING = "hrsam.varying"
STATUS = "hrsam.status"
ERROR = "hrsam.error"  # the last line of the traceback, or the unsupported reason
PARENT = "mlflow.parentRunId"
RUN_NAME = "mlflow.runName"
NOTE = "mlflow.note.content"  # the run's description in the UI: the sweep's command line
# MLflow >= 3 shows an experiment without a kind as a GenAI one (traces, not runs)
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")
# the tags above as the reports' column names
TAG_COLUMNS = {
    ROLE: "role",
    TRIAL_ID: "trial_id",
    SWEEP_ID: "sweep_id",
    GRID: "grid",
    VARYING: "varying",
    LABEL: "label",
    STATUS: "trial_status",
    ERROR: "error",
    PARENT: "parent",
    RUN_NAME: "run_name",
    # provenance tags the reports show beside timings (`ablations.trial.provenance`)
    "device_name": "device_name",
    "precision": "precision",
    "threads": "threads",
    "timing_shared": "timing_shared",
}
REQUESTED = "requested."  # param prefix: the value asked for where the job resolved another

# Metrics. Two measurements of latency and memory exist and are named apart:
# the warm fixed-input benchmark (hrsam.profiling.measure: the figures papers report) and the
# per-object timings of the interactive evaluation (cold per image, the real prompt sequence).
BENCH_METRICS = ("encoder_ms", "encoder_ms_iqr", "decoder_ms", "sat_s", "peak_mem_mb")
EVAL_PREFIX = "eval_"  # evaluate()'s encoder_ms / decoder_ms / peak_mem_mb become eval_*
EVAL_TIMINGS = ("eval_encoder_ms", "eval_decoder_ms", "eval_peak_mem_mb", "spc_s")
QUALITY_METRICS = ("noc85", "noc90", "noc95", "nof85", "nof90", "nof95", "biou")
# click use (hrsam.interactive.metrics.click_use): what clicks 2-5 and the previous mask add;
# ``click_gain`` = mIoU@5 - mIoU@1 with its 95% interval over objects in ``_lo`` / ``_hi``
CLICK_USE_METRICS = (
    "click_gain",
    "click_gain_lo",
    "click_gain_hi",
    "neg_click_delta",
    "pos_click_delta",
    "harmful_clicks",
    "oracle_miou",
    "oracle_gain",
)
UPSAMPLED = "upsampled"  # share of objects evaluated at a ts above their native size
EMPTY_MIOU = 0.01  # below this mIoU after every click a model "predicts nothing"


def predicts_nothing(metrics: dict) -> bool:
    """Whether the mIoU after every click (``miou@k`` or ``miou_at_k``) is below `EMPTY_MIOU`:
    a training that did not learn, not a measurement of a model."""
    values = [v for k, v in metrics.items() if clicks_of(k) is not None and v == v]
    return bool(values) and max(values) < EMPTY_MIOU


MIOU_SERIES = "miou"  # mIoU after k clicks, logged as a step series (step = k)
_MIOU = re.compile(r"^miou@(\d+)$")
_MIOU_MLFLOW = re.compile(r"^miou_at_(\d+)$")


# What each timing means, for table notes and axis captions (eval-protocol E; DESIGN.md 4).
TIMING_PROTOCOL = {
    "encoder_ms": "image encoder once per image at bench.ts, warm, median of bench.reps",
    "decoder_ms": "prompt encoder + mask decoder per click, warm, median",
    "sat_s": "one encoder pass plus a bench.sat_points^2 grid of single-click decodes",
    "peak_mem_mb": "peak memory of the warm benchmark",
    "eval_encoder_ms": "encoder per object during the interactive evaluation (median)",
    "eval_decoder_ms": "decoder per click during the interactive evaluation (median)",
    "eval_peak_mem_mb": "peak memory over the whole interactive evaluation",
    "spc_s": "seconds per click over the interactive evaluation (encoder + decoders)",
}


def miou_at(k: int) -> str:
    """Our name of mIoU after ``k`` clicks: ``miou@5``."""
    return f"miou@{k}"


def clicks_of(name: str) -> int | None:
    """``k`` of ``miou@k`` (or its MLflow spelling ``miou_at_k``), else None."""
    m = _MIOU.match(name) or _MIOU_MLFLOW.match(name)
    return int(m[1]) if m else None


def to_mlflow(name: str) -> str:
    """Our metric name in MLflow's alphabet (no ``@``): ``miou@5`` -> ``miou_at_5``."""
    k = clicks_of(name)
    return name if k is None else f"miou_at_{k}"


def eval_timing(name: str) -> str:
    """The record name of an `EvalResult.summary` timing: ``encoder_ms`` -> ``eval_encoder_ms``;
    ``spc_s`` (seconds per click) exists only there and keeps its name."""
    return EVAL_PREFIX + name if name in ("encoder_ms", "decoder_ms", "peak_mem_mb") else name


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
            return cls.from_dict(json.loads((Path(folder) / "result.json").read_text()))
        except (OSError, ValueError, TypeError):
            return None

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

    def mlflow_metrics(self) -> dict[str, float]:
        """Finite metrics under their MLflow names (``miou@k`` -> ``miou_at_k``)."""
        out = {}
        for k, v in self.metrics.items():
            if v is not None and math.isfinite(float(v)):
                out[to_mlflow(k)] = float(v)
        return out


def _param_text(v) -> str:
    s = json.dumps(v) if isinstance(v, list | dict) else str(v)
    return s[:6000]


def parent_tags(sweep_id: str, grid: str, varying: list[str]) -> dict[str, str]:
    return {ROLE: ROLE_SWEEP, SWEEP_ID: sweep_id, GRID: grid, VARYING: ",".join(varying)}
