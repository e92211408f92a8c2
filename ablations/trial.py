"""One trial, run inside a submitit job: build, train (cached) or load, measure, evaluate, write
the trial folder atomically, mirror it to an MLflow child run (DESIGN.md section 2).

The trial arrives as requested (``auto`` and preset defaults unresolved) and is resolved here, on
the job's own device: device, scan backend, kernel, every preset value; both are recorded
(``config_requested.yaml``, ``config_resolved.yaml``, the record's ``params`` and ``resolved``).
Weights travel as checkpoint paths: a training trial trains (cached) to ``model.pt`` and loads
it like an evaluate-only trial loads ``model.checkpoint``, with only the computation-side
settings (kernel, scan backend) chosen here.

An outcome is a `TrialRecord` (`ablations.record`): FINISHED; UNSUPPORTED with the reason when
the kernel's or scan backend's own ``support()`` says this device cannot run it (decided before
any training); FAILED with the traceback. The function returns instead of raising so that an
in-process (debug) sweep goes on with the next trial. Trials lock their id, so a trial started
twice (a sweep killed and re-run while a job survived) runs once. Training is cached under
``<out>/<experiment>/cache/train/<training key>/`` and resumes from its last checkpoint, which
also makes the job checkpointable on SLURM: a requeued job calls the same function again.
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import json
import logging
import os
import platform
import random
import shutil
import socket
import subprocess
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path

import submitit

from ablations import config as C
from ablations import record as R
from ablations.config import flatten
from ablations.record import TrialRecord
from hrsam import names
from hrsam.ssm import scan as scan_backends

log = logging.getLogger("ablations.trial")


@dataclass(frozen=True)
class TrialJob:
    """Everything a job needs (small and picklable: paths and a plain dict, never a model)."""

    trial_id: str
    config: dict
    label: str
    train_key: str | None
    sweep_id: str
    grid: str
    experiment: str
    folder: str  # the sweep folder: trials/ and cache/ live under it
    tracking_uri: str
    parent_run_id: str
    threads: int = 0  # torch threads (0: torch's default)
    cwd: str = "."  # relative paths in the config (data roots, checkpoints) are from here


class RunTrial(submitit.helpers.Checkpointable):
    """The submitted callable; on SLURM timeout or preemption it is requeued with the same job,
    and training resumes from the cache's last checkpoint."""

    def __call__(self, job: TrialJob) -> dict:
        return run_trial(job)


def _write_atomic(path: Path, text: str) -> None:
    """``text`` into ``path`` through a temporary file and a rename: readers never see half."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(path)


@contextlib.contextmanager
def file_lock(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


class _Progress:
    """Writes the trial's phase to ``trials/.<id>.progress`` for the sweep's status line."""

    def __init__(self, path: Path) -> None:
        self.path, self.last = path, 0.0

    def __call__(self, text: str, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self.last > 1.0:
            self.last = now
            _write_atomic(self.path, text)
            log.info(text)


def run_trial(job: TrialJob) -> dict:
    """Runs one trial (or returns its record when it already finished). Never raises for a
    failure of the trial itself."""
    os.chdir(job.cwd)
    trials = Path(job.folder) / "trials"
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
        handler = logging.FileHandler(stage / "log.txt")
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
        root = logging.getLogger()
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        progress = _Progress(trials / f".{job.trial_id}.progress")
        record = TrialRecord(
            job.trial_id,
            job.sweep_id,
            job.grid,
            job.experiment,
            job.label,
            params=flatten(job.config),
        )
        resolved = job.config
        t_start = round(time.time(), 3)  # wall clock, before the marker: overlap with others
        record.provenance["start"] = f"{t_start:.3f}"
        running = trials / f".{job.trial_id}.running"  # other trials see that this one runs
        running.write_text(f"{socket.gethostname()} {os.getpid()}")
        series = _start_run(job, record)
        start = time.perf_counter()
        try:
            resolved = _execute(job, record, stage, progress, series)
        except UnsupportedError as e:
            record.status, record.reason = R.UNSUPPORTED, str(e)
            resolved = e.resolved
            log.warning("trial %s: unsupported here: %s", job.trial_id, e)
        except Exception:
            record.status, record.error = R.FAILED, traceback.format_exc()
            log.error("trial %s failed:\n%s", job.trial_id, record.error)
        finally:
            root.removeHandler(handler)
            handler.close()
            t_end = round(time.time(), 3)  # logged before the marker goes: no gap between them
            record.provenance["end"] = f"{t_end:.3f}"
            _log_interval(Path(job.folder), job.trial_id, t_start, t_end)
            running.unlink(missing_ok=True)
            series.flush()
        record.resolved = flatten(resolved)
        record.provenance = {**provenance(resolved), **record.provenance}
        record.wall_s = time.perf_counter() - start
        _write_folder(stage, job.config, resolved, record)
        if final.exists():
            shutil.rmtree(final)  # a failed earlier attempt
        stage.rename(final)
        (trials / f".{job.trial_id}.progress").unlink(missing_ok=True)
        _mirror(job, record, final)
        return _brief(record)


class UnsupportedError(RuntimeError):
    """This device cannot run the trial: the kernel's / scan backend's own support() reasons."""

    def __init__(self, reason: str, resolved: dict) -> None:
        super().__init__(reason)
        self.resolved = resolved


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

    try:
        run_id = tracking.start_trial(job.tracking_uri, job.experiment, job.parent_run_id, record)
    except Exception as e:
        log.error("MLflow: could not start the trial's run (it is logged at the end): %s", e)
        run_id = None
    return tracking.SeriesLogger(job.tracking_uri, run_id)


INTERVALS = "trial_intervals.log"  # in the sweep folder: host, trial id, start, end per line


def _log_interval(folder: Path, trial_id: str, start: float, end: float) -> None:
    """Appends when this trial ran (one short O_APPEND write: lines never interleave)."""
    line = f"{socket.gethostname()} {trial_id} {start:.3f} {end:.3f}\n"
    with open(folder / INTERVALS, "a") as f:
        f.write(line)


def others_overlapping(folder: Path, trial_id: str, t0: float, t1: float) -> set[str]:
    """Other trials of this sweep that ran on this machine at some moment of [t0, t1]: those
    still running now (their markers) and those that ended since t0 (their logged intervals)."""
    out = set(others_running(folder / "trials", trial_id))
    host = socket.gethostname()
    with contextlib.suppress(OSError):
        for line in (folder / INTERVALS).read_text().splitlines():
            their_host, their_id, start, end = line.split()
            if (
                their_host == host
                and their_id != trial_id
                and float(start) < t1
                and float(end) > t0
            ):
                out.add(their_id)
    return out


def others_running(trials: Path, trial_id: str) -> list[str]:
    """Ids of the other trials of this sweep running now on this machine (their
    ``.<id>.running`` markers: host and pid; a killed trial's marker is ignored)."""
    host, out = socket.gethostname(), []
    for p in trials.glob(".*.running"):
        if p.name == f".{trial_id}.running":
            continue
        try:
            their_host, pid = p.read_text().split()
            if their_host == host:
                os.kill(int(pid), 0)  # raises when that process is gone
                out.append(p.name[1 : -len(".running")])
        except (OSError, ValueError):
            continue
    return sorted(out)


def _mirror(job: TrialJob, record: TrialRecord, folder: Path) -> None:
    """Logs the record to MLflow; a failure here leaves the folder for ``ablations.sync``."""
    from ablations import tracking

    try:
        record.mlflow_run_id = tracking.log_trial(
            job.tracking_uri, job.experiment, job.parent_run_id, record, folder
        )
    except Exception as e:
        log.error("MLflow logging failed (python -m ablations.sync re-imports it): %s", e)


def provenance(resolved: dict) -> dict:
    """Where and with what a trial ran: git sha and dirty flag, versions, device, precision,
    kernels that run here in that precision, the environment report's summary
    (`hrsam.info.summary`), host."""
    import torch

    from hrsam import info
    from hrsam.attention.kernels import KERNELS, get_kernel
    from hrsam.precision import dtype, tf32_enabled

    root = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str:
        try:
            return subprocess.run(
                ["git", *args], cwd=root, capture_output=True, text=True, timeout=10
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    device = torch.device(resolved["device"] if resolved["device"] != "auto" else "cpu")
    if device.type == "cuda" and torch.cuda.is_available():
        device_name = torch.cuda.get_device_name(device)
    else:
        device_name = _cpu_name()
    precision = resolved.get("precision", "fp32")
    kernels = [k for k in KERNELS.names() if not get_kernel(k).support(device, dtype(precision))]
    return {
        "git_sha": git("rev-parse", "HEAD") or "unknown",
        "git_dirty": str(bool(git("status", "--porcelain", "--untracked-files=no"))),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": device.type,
        "device_name": device_name,
        "precision": precision,
        "tf32": str(tf32_enabled()),
        "environment": info.summary(device),
        "threads": str(torch.get_num_threads()),
        "cores": str(len(os.sched_getaffinity(0))),
        "kernels_available": ",".join(kernels),
        "host": socket.gethostname(),
        **_job(),
    }


def _job() -> dict:
    """The job as its scheduler names it: ``2_1`` for task 1 of SLURM array 2 (as squeue and
    the job folders say), the process id for local jobs; nothing in-process (debug)."""
    try:
        env = submitit.JobEnvironment()
    except RuntimeError:  # not inside a submitit job
        return {"executor": "debug"}
    return {"executor": env.cluster, "job_id": str(env.job_id)}


def _cpu_name() -> str:
    """The CPU model as /proc/cpuinfo names it (e.g. ``AMD EPYC 7B13``), else the machine."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} ({os.cpu_count()} cores)"
    except OSError:
        pass
    return platform.processor() or platform.machine()


# -- resolution: once, here, on the job's own device --------------------------------------------


def resolve_device(requested: str) -> str:
    """``auto`` -> ``cuda`` when this job's machine has it, else ``cpu``; ``cuda`` without one
    is an error (not an unsupported variant: the request names a device that is not here)."""
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device=cuda but this machine has no CUDA device")
    return requested


def resolve_kernel(model_cfg: dict, device, precision: str) -> str:
    """The attention kernel this trial runs: a named one as asked, else (``None`` / ``auto``) the
    fastest exact kernel probed to run on this device in this precision
    (`hrsam.models.ModelPreset.for_device`, the same rule for every family)."""
    from hrsam.models import get_preset
    from hrsam.precision import dtype

    asked = C.model_overrides(model_cfg, (*C.ARCH_KEYS, "kernel"))
    preset = get_preset(model_cfg["preset"], **asked)
    return preset.for_device(device, dtype(precision)).kernel


def resolve_scan(requested: str | None, device) -> str:
    """The scan backend this trial runs with: a named one as asked, ``none`` as asked, else
    (``None`` / ``auto``) this device's default (`hrsam.ssm.scan.default_scan`)."""
    if requested not in (None, "auto"):
        return requested
    return scan_backends.default_scan(device)


def seed_everything(seed: int) -> None:
    """Python's, NumPy's and torch's global generators (model init, anything unseeded below);
    the data order, flips and clicks have their own generators seeded from the same seed."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _resolved(cfg: dict, device, preset) -> dict:
    """The requested config with every value the job decided filled in: device and the model's
    preset values (attention, kernel, window size, scan backend, ...)."""
    out = copy.deepcopy(cfg)
    out["device"] = device.type
    hrsam = preset.family == "hrsam"
    out["model"].update(
        attention=preset.attention,
        kernel=preset.kernel,
        window_size=preset.window_size,
        scan=preset.scan if hrsam else None,
        cycle_repeats=preset.cycle_repeats if hrsam else None,
        anchor_sizes=list(preset.anchor_sizes) if preset.anchor_sizes else None,
    )
    if out["bench"]["ts"] == 0:
        out["bench"]["ts"] = out["eval"]["ts"]
    return out


def _check_support(preset, device, resolved: dict) -> None:
    """UNSUPPORTED unless the kernel runs here in the dtype the trial's precision gives it."""
    from hrsam.attention import variant_support
    from hrsam.precision import dtype

    precision = resolved.get("precision", "fp32")
    reasons = variant_support(preset.attention, preset.kernel, device, dtype(precision))
    what = f"attention {preset.attention} with kernel {preset.kernel}"
    if not reasons and preset.family == "hrsam" and preset.scan != "none":
        reasons = scan_backends.get_scan(preset.scan).support(device)
        what = f"scan backend {preset.scan}"
    if reasons:
        where = device.type if precision == "fp32" else f"{device.type} in {precision}"
        reason = f"{what} cannot run on {where}: {'; '.join(reasons)}"
        raise UnsupportedError(reason, resolved)


def _execute(
    job: TrialJob, record: TrialRecord, stage: Path, progress: _Progress, series=None
) -> dict:
    """Resolves, trains (cached) or loads, benchmarks, evaluates; fills ``record``'s metrics
    and returns the resolved config."""
    import torch

    from hrsam.interactive import evaluate
    from hrsam.models import get_preset, load_checkpoint, load_model
    from hrsam.precision import set_tf32
    from hrsam.profiling import measure

    cfg = job.config
    precision = cfg.get("precision", "fp32")
    set_tf32(cfg.get("tf32", False))
    if job.threads:  # the cores the job was given (sweep.py also exports OMP/MKL_NUM_THREADS)
        torch.set_num_threads(job.threads)
    device = torch.device(resolve_device(cfg["device"]))
    seed_everything(cfg["seed"])
    m = cfg["model"]
    family = get_preset(m["preset"]).family
    compute = {"kernel": resolve_kernel(m, device, precision)}
    if family == "hrsam":
        compute["scan"] = resolve_scan(m["scan"], device)
    if cfg["train"]["enabled"]:
        preset = get_preset(m["preset"], **C.model_overrides(m, C.ARCH_KEYS), **compute)
        _check_support(preset, device, _resolved(cfg, device, preset))  # before any training
        ckpt, info = train_cached(job, device, progress, series)
        if "base_key" in info:  # finetuned from the shared base training
            record.provenance["base"] = info.pop("base_key")
        record.metrics.update(info)
        model = load_checkpoint(ckpt, **compute)
    else:
        ckpt = m["checkpoint"]
        model = load_model(m["preset"], ckpt, **C.model_overrides(m, C.ARCH_KEYS), **compute)
        if not ckpt:
            log.warning("no checkpoint for %s: evaluating random weights", m["preset"])
    record.provenance["weights"] = str(ckpt or "random")
    preset = model.preset
    resolved = _resolved(cfg, device, preset)
    _check_support(preset, device, resolved)
    model.to(device).eval()
    dataset = C.data_config(cfg).build("val")
    timing_start = time.time()
    if cfg["bench"]["enabled"]:
        b = resolved["bench"]
        progress(f"benchmark at ts {b['ts']}", force=True)
        warm = measure(
            model,
            dataset[0].image,
            b["ts"],
            reps=b["reps"],
            sat_points=b["sat_points"],
            precision=precision,
        )
        record.metrics.update(warm)
    ev = C.eval_config(cfg)
    with torch.no_grad():
        result = evaluate(
            model,
            dataset,
            ev.protocol,
            ev.ts,
            ev.max_clicks,
            cfg["seed"],
            progress=lambda i, n, name: (
                progress(f"evaluate {i}/{n}"),
                series and series(i, {names.EVAL_OBJECTS_DONE: i}),
            ),
            precision=precision,
        )
    # a timing taken while another trial of this sweep ran on the same machine says so
    timing_end = time.time()
    shared = others_overlapping(Path(job.folder), job.trial_id, timing_start, timing_end)
    record.provenance["timing_start"] = f"{timing_start:.3f}"
    record.provenance["timing_end"] = f"{timing_end:.3f}"
    record.provenance["timing_shared"] = str(bool(shared))
    record.provenance["shared_with"] = ",".join(sorted(shared))
    # the evaluation's own per-object timings keep their own names (record.EVAL_TIMINGS)
    record.metrics.update({names.eval_timing(k): v for k, v in result.summary().items()})
    curve = result.ious.mean(axis=0)
    record.metrics.update({names.miou_at(k): float(v) for k, v in enumerate(curve, start=1)})
    record.miou_curve = [float(v) for v in curve]
    result.write_csv(stage)
    return resolved


def _training_build(tc, device) -> dict:
    """`build_model`'s where-and-how for a training: the kernel ``auto`` resolves to the fastest
    exact kernel with a backward pass on this device in the training's precision."""
    from hrsam.precision import dtype
    from hrsam.train.loop import training_precision

    return {"device": device, "dtype": dtype(training_precision(tc, device)), "training": True}


def train_base(job: TrialJob, device, dataset, progress: _Progress) -> tuple[Path, dict]:
    """The shared base training (`ablations.config.base_config`): the preset's own architecture
    trained with the trial's recipe for ``train.base_steps`` steps, once per key for every sweep
    under ``out`` (``<out>/_base/<key>/model.pt``; a killed one resumes). Returns its checkpoint
    and {base_key, base_train_s (when it was trained), base_steps}."""
    import torch

    from hrsam.models import build_model, get_preset, save_checkpoint
    from hrsam.train.loop import train

    cfg = job.config
    key, tc = C.base_config(cfg)
    folder = Path(job.folder).parent / "_base" / key
    ckpt, info_path = folder / "model.pt", folder / "base.json"
    with file_lock(folder / ".lock"):
        if not (ckpt.exists() and info_path.exists()):
            preset = cfg["model"]["preset"]
            scan = (
                {"scan": resolve_scan(None, device)} if get_preset(preset).family == "hrsam" else {}
            )
            torch.manual_seed(tc.seed)
            model = build_model(preset, **_training_build(tc, device), **scan).to(device)
            start = time.perf_counter()
            train(
                model,
                dataset,
                tc,
                folder,
                progress=lambda s, n, loss: progress(f"base training {s}/{n} loss {loss:.3f}"),
            )
            info = {"base_key": key, names.BASE_TRAIN_S: time.perf_counter() - start}
            info[names.BASE_STEPS] = tc.steps
            save_checkpoint(model.cpu(), ckpt, training=asdict(tc))
            _write_atomic(info_path, json.dumps(info))
        else:
            progress(f"reusing base training {key}", force=True)
        return ckpt, json.loads(info_path.read_text())


def train_cached(job: TrialJob, device, progress: _Progress, series=None) -> tuple[Path, dict]:
    """The checkpoint of this trial's training, trained once per training key (trials that need
    the same model wait on a lock and reuse it). Returns (its path, {train_s, train_loss}).

    Trained with this device's default scan backend (every backend computes the same function)
    and the kernel ``auto`` resolves to for a training here; the trial loads the file with its
    own kernel and backend."""
    import torch

    from hrsam.models import build_model, get_preset, save_checkpoint
    from hrsam.models.checkpoint import init_from, read_state
    from hrsam.train.loop import train

    cfg = job.config
    folder = Path(job.folder) / "cache" / "train" / job.train_key
    ckpt, info_path = folder / "model.pt", folder / "train.json"
    with file_lock(folder / ".lock"):
        if ckpt.exists() and info_path.exists():
            progress(f"reusing training {job.train_key}", force=True)
            return ckpt, json.loads(info_path.read_text())
        m = cfg["model"]
        overrides = C.model_overrides(m, C.ARCH_KEYS)
        if get_preset(m["preset"]).family == "hrsam":
            overrides["scan"] = "none" if m["scan"] == "none" else resolve_scan(None, device)
        tc = C.train_config(cfg)
        dataset = C.data_config(cfg).build("train")
        torch.manual_seed(tc.seed)  # the initial weights: the trial's seed, nothing before it
        model = build_model(m["preset"], **_training_build(tc, device), **overrides).to(device)
        base = {}
        if C.base_config(cfg) is not None:  # finetune from the shared base training
            base_ckpt, base = train_base(job, device, dataset, progress)
            copied, fresh = init_from(model, read_state(base_ckpt)["state_dict"])
            log.info("initialized %d tensors from the base %s; fresh: %s", copied, base_ckpt, fresh)
            base[names.BASE_FRESH_TENSORS] = len(fresh)
        start = time.perf_counter()
        state = train(
            model,
            dataset,
            tc,
            folder,
            progress=lambda s, n, loss: progress(f"train {s}/{n} loss {loss:.3f}"),
            on_step=series,
        )
        info = {
            names.TRAIN_S: time.perf_counter() - start,
            names.TRAIN_LOSS: state.losses[-1],
            **base,
        }
        save_checkpoint(model.cpu(), ckpt, training=asdict(tc), base=base.get("base_key"))
        _write_atomic(info_path, json.dumps(info))
        return ckpt, info
