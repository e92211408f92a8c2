"""One trial, run inside a submitit job (docs/architecture.md), read top to bottom in `execute`:

    resolve (ablations.resolve) -> train, cached (ablations.training) or the given checkpoint
    -> measure and evaluate (ablations.evaluation) -> record (ablations.record)

The job receives a frozen `TrialSpec` (as requested) and resolves it once, here, on its own
device; the requested and the resolved tree are both recorded (``config_requested.yaml``,
``config_resolved.yaml``, the record's ``params`` and ``resolved``). The trial folder is written
atomically (staged, then renamed) and mirrored to an MLflow child run.

An outcome is a `TrialRecord`: FINISHED; UNSUPPORTED with the reason when the kernel's or scan
backend's own ``support()`` says this device cannot run it (decided before any training);
FAILED with the traceback. `run_trial` returns instead of raising so that an in-process (debug)
sweep goes on with the next trial. Trials lock their id, so a trial started twice (a sweep
killed and re-run while a job survived) runs once; training resumes from its cache's last
checkpoint, which also makes the job checkpointable on SLURM (a requeued job calls the same
function again).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import submitit

from ablations import evaluation, provenance
from ablations import record as R
from ablations.record import TrialRecord
from ablations.resolve import Resolved, UnsupportedError, resolve, seed_everything
from ablations.spec import TrialSpec
from ablations.training import file_lock, train_cached, write_atomic
from hrsam import names

log = logging.getLogger("ablations.trial")


@dataclass(frozen=True)
class SweepRun:
    """Where a trial's sweep lives and logs (the same for every trial of a sweep)."""

    sweep_id: str
    grid: str
    experiment: str
    folder: str  # the sweep folder: trials/ and cache/ live under it
    tracking_uri: str
    parent_run_id: str


@dataclass(frozen=True)
class TrialJob:
    """Everything a job needs (small and picklable: a spec and paths, never a model)."""

    spec: TrialSpec
    sweep: SweepRun
    threads: int = 0  # torch threads (0: torch's default)
    cwd: str = "."  # relative paths in the config (data roots, checkpoints) are from here

    @property
    def trial_id(self) -> str:
        return self.spec.trial_id

    @property
    def label(self) -> str:
        return self.spec.label


class RunTrial(submitit.helpers.Checkpointable):
    """The submitted callable; on SLURM timeout or preemption it is requeued with the same job,
    and training resumes from the cache's last checkpoint."""

    def __call__(self, job: TrialJob) -> dict:
        return run_trial(job)


class _Progress:
    """Writes the trial's phase to ``trials/.<id>.progress`` for the sweep's status line."""

    def __init__(self, path: Path) -> None:
        self.path, self.last = path, 0.0

    def __call__(self, text: str, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self.last > 1.0:
            self.last = now
            write_atomic(self.path, text)
            log.info(text)


@dataclass
class Outcome:
    """What `execute` found, filled as it goes (a failure keeps what was measured before it):
    the resolved tree, metrics, the mIoU curve and provenance entries for the record."""

    resolved: dict
    metrics: dict = field(default_factory=dict)
    miou_curve: list = field(default_factory=list)
    facts: dict = field(default_factory=dict)  # provenance entries


def run_trial(job: TrialJob) -> dict:
    """Runs one trial (or returns its record when it already finished). Never raises for a
    failure of the trial itself."""
    os.chdir(job.cwd)
    folder = Path(job.sweep.folder)
    trials = folder / "trials"
    final = trials / job.trial_id
    with file_lock(trials / f".{job.trial_id}.lock"):
        done = TrialRecord.load(final)
        if done is not None and done.ok:
            _mirror(job, done, final)
            return _brief(done)
        for stale in trials.glob(f".{job.trial_id}.tmp-*"):  # left by a killed attempt
            shutil.rmtree(stale, ignore_errors=True)
        stage = trials / f".{job.trial_id}.tmp-{os.getpid()}"
        stage.mkdir(parents=True)
        record = R.started(job.spec, job.sweep.sweep_id, job.sweep.grid, job.sweep.experiment)
        start = time.perf_counter()
        with _trial_log(stage), provenance.running(folder, job.trial_id) as when:
            record.provenance.update(start=when["start"])
            outcome = _attempt(job, record, stage)
        R.finish(record, outcome.resolved, outcome.metrics, outcome.miou_curve, outcome.facts)
        record.provenance.update(end=when["end"])
        record.provenance = {**provenance.provenance(outcome.resolved), **record.provenance}
        record.wall_s = time.perf_counter() - start
        _write_folder(stage, job.spec.config, outcome.resolved, record)
        if final.exists():
            shutil.rmtree(final)  # a failed earlier attempt
        stage.rename(final)
        (trials / f".{job.trial_id}.progress").unlink(missing_ok=True)
        _mirror(job, record, final)
        return _brief(record)


def _attempt(job: TrialJob, record: TrialRecord, stage: Path) -> Outcome:
    """`execute` with its failures turned into the record's status (the MLflow run lives from
    the trial's first second and receives the training curve)."""
    progress = _Progress(Path(job.sweep.folder) / "trials" / f".{job.trial_id}.progress")
    series = _start_run(job, record)
    out = Outcome(job.spec.config)  # what a failure leaves: the request, what was measured
    try:
        execute(job, stage, progress, series, out)
    except UnsupportedError as e:
        record.status, record.reason = R.UNSUPPORTED, str(e)
        out.resolved = e.resolved
        log.warning("trial %s: unsupported here: %s", job.trial_id, e)
    except Exception:
        record.status, record.error = R.FAILED, traceback.format_exc()
        out.resolved = job.spec.config
        log.error("trial %s failed:\n%s", job.trial_id, record.error)
    finally:
        series.flush()
    return out


def execute(job: TrialJob, stage: Path, progress, series, out: Outcome) -> None:
    """The trial, top to bottom: resolve, train (cached) or take the given checkpoint, load,
    measure, evaluate, into ``out``; the IoU matrix and clicks go to ``stage``."""
    spec = job.spec
    _configure(spec, job.threads)
    seed_everything(spec.seed)
    resolved = resolve(spec)
    out.resolved = resolved.config()
    checkpoint = _weights(resolved, job, progress, series, out)
    model = evaluation.load(resolved, checkpoint)
    out.resolved = resolved.config(model.preset)
    dataset = spec.data.build("val")
    with provenance.timing(Path(job.sweep.folder), spec.trial_id) as timing:
        if spec.bench.enabled:
            out.metrics.update(evaluation.benchmark(resolved, model, dataset, progress))
        result = evaluation.evaluate(resolved, model, dataset, progress, series)
    out.facts.update(timing.facts())
    quality, out.miou_curve = evaluation.metrics(result)
    out.metrics.update(quality)
    result.write_csv(stage)


def _configure(spec: TrialSpec, threads: int) -> None:
    """TF32 as the spec asks, and the cores the job was given (sweep.py also exports
    OMP/MKL_NUM_THREADS)."""
    import torch

    from hrsam.precision import set_tf32

    set_tf32(spec.tf32)
    if threads:
        torch.set_num_threads(threads)


def _weights(resolved: Resolved, job: TrialJob, progress, series, out: Outcome):
    """The checkpoint the trial evaluates: its training's (trained once per key, cached) or
    ``model.checkpoint``; the training's metrics and the base it started from go to ``out``."""
    spec = resolved.spec
    if spec.train is None:
        checkpoint = spec.model.checkpoint
    else:
        checkpoint, info = train_cached(resolved, Path(job.sweep.folder), progress, series)
        if "base_key" in info:  # finetuned from pretrained weights or a shared base training
            out.facts["base"] = info.pop("base_key")
        if names.BASE_SHA256 in info:
            out.facts[names.BASE_SHA256] = info.pop(names.BASE_SHA256)
        out.metrics.update(info)
    out.facts["weights"] = str(checkpoint or "random")
    return checkpoint


@contextlib.contextmanager
def _trial_log(stage: Path):
    """Everything logged while the trial runs also goes to its ``log.txt``."""
    handler = logging.FileHandler(stage / "log.txt")
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield
    finally:
        root.removeHandler(handler)
        handler.close()


def _brief(record: TrialRecord) -> dict:
    out = {"trial_id": record.trial_id, "label": record.label, "status": record.status}
    out.update(metrics=record.metrics, error=record.headline(), mlflow_run_id=record.mlflow_run_id)
    return out


def _write_folder(stage: Path, requested: dict, resolved: dict, record: TrialRecord) -> None:
    from omegaconf import OmegaConf

    (stage / "config_requested.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(requested)))
    (stage / "config_resolved.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(resolved)))
    record.save(stage)


def _start_run(job: TrialJob, record: TrialRecord):
    """The MLflow child run, RUNNING from the trial's first second (the UI shows it, then its
    training curve); an unreachable store only costs the live view."""
    from ablations import tracking

    s = job.sweep
    try:
        run_id = tracking.start_trial(s.tracking_uri, s.experiment, s.parent_run_id, record)
    except Exception as e:
        log.error("MLflow: could not start the trial's run (it is logged at the end): %s", e)
        run_id = None
    return tracking.SeriesLogger(s.tracking_uri, run_id)


def _mirror(job: TrialJob, record: TrialRecord, folder: Path) -> None:
    """Logs the record to MLflow; a failure here leaves the folder for ``ablations.sync``."""
    from ablations import tracking

    s = job.sweep
    try:
        record.mlflow_run_id = tracking.log_trial(
            s.tracking_uri, s.experiment, s.parent_run_id, record, folder
        )
    except Exception as e:
        log.error("MLflow logging failed (python -m ablations.sync re-imports it): %s", e)
