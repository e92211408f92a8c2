"""One trial, run inside a submitit job: build, train (cached) or load, measure, evaluate, write
the trial folder atomically, mirror it to an MLflow child run (DESIGN.md section 2).

A failure is a record too: the folder gets ``result.json`` with ``status: FAILED`` and the
traceback, and the MLflow run is FAILED; the function returns instead of raising so that an
in-process (debug) sweep goes on with the next trial. Trials lock their id, so a trial started
twice (a sweep killed and re-run while a job survived) runs once. Training is cached under
``<out>/<experiment>/cache/train/<training key>/`` and resumes from its last checkpoint, which
also makes the job checkpointable on SLURM: a requeued job calls the same function again.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import platform
import shutil
import socket
import subprocess
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path

import submitit

from ablations.config import flatten, model_overrides
from hrsam._cli import dataset_kwargs

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


@contextlib.contextmanager
def file_lock(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def read_record(folder: Path) -> dict | None:
    try:
        return json.loads((folder / "result.json").read_text())
    except (OSError, ValueError):
        return None


class _Progress:
    """Writes the trial's phase to ``trials/.<id>.progress`` for the sweep's status line."""

    def __init__(self, path: Path) -> None:
        self.path, self.last = path, 0.0

    def __call__(self, text: str, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self.last > 1.0:
            self.last = now
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(text)
            tmp.replace(self.path)
            log.info(text)


def run_trial(job: TrialJob) -> dict:
    """Runs one trial (or returns its record when it already finished). Never raises for a
    failure of the trial itself."""
    os.chdir(job.cwd)
    trials = Path(job.folder) / "trials"
    final = trials / job.trial_id
    with file_lock(trials / f".{job.trial_id}.lock"):
        done = read_record(final)
        if done is not None and done["status"] == "FINISHED":
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
        record = {
            "trial_id": job.trial_id,
            "sweep_id": job.sweep_id,
            "grid": job.grid,
            "experiment": job.experiment,
            "label": job.label,
            "params": flatten(job.config),
            "tags": provenance(job.config),
        }
        start = time.perf_counter()
        try:
            out = _execute(job, stage, progress)
            record["tags"]["weights"] = out.pop("weights")
            record.update(out, status="FINISHED")
        except Exception:
            record["status"] = "FAILED"
            record["error"] = traceback.format_exc()
            log.error("trial %s failed:\n%s", job.trial_id, record["error"])
        finally:
            root.removeHandler(handler)
            handler.close()
        record["wall_s"] = time.perf_counter() - start
        _write_folder(stage, job.config, record)
        if final.exists():
            shutil.rmtree(final)  # a failed earlier attempt
        stage.rename(final)
        (trials / f".{job.trial_id}.progress").unlink(missing_ok=True)
        _mirror(job, record, final)
        return _brief(record)


def _brief(record: dict) -> dict:
    keep = ("trial_id", "label", "status", "metrics", "error", "mlflow_run_id")
    return {k: record[k] for k in keep if k in record}


def _write_folder(stage: Path, config: dict, record: dict) -> None:
    from omegaconf import OmegaConf

    (stage / "config_resolved.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(config)))
    (stage / "result.json").write_text(json.dumps(record, indent=1, default=str))


def _mirror(job: TrialJob, record: dict, folder: Path) -> None:
    """Logs the record to MLflow; a failure here leaves the folder for ``ablations.sync``."""
    from ablations import tracking

    try:
        record["mlflow_run_id"] = tracking.log_trial(
            job.tracking_uri, job.experiment, job.parent_run_id, record, folder
        )
    except Exception as e:
        log.error("MLflow logging failed (python -m ablations.sync re-imports it): %s", e)


def provenance(config: dict) -> dict:
    """Where and with what a trial ran: git sha and dirty flag, versions, device, kernels, host."""
    import torch

    from hrsam.attention.kernels import KERNELS, get_kernel

    root = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str:
        try:
            return subprocess.run(
                ["git", *args], cwd=root, capture_output=True, text=True, timeout=10
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    device = torch.device(config.get("device", "cpu"))
    if device.type == "cuda" and torch.cuda.is_available():
        device_name = torch.cuda.get_device_name(device)
    else:
        device_name = platform.processor() or platform.machine()
    kernels = [k for k in KERNELS.names() if not get_kernel(k).support(device, torch.float32)]
    return {
        "git_sha": git("rev-parse", "HEAD") or "unknown",
        "git_dirty": str(bool(git("status", "--porcelain", "--untracked-files=no"))),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": device.type,
        "device_name": device_name,
        "kernels_available": ",".join(kernels),
        "host": socket.gethostname(),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID", ""),
    }


def _execute(job: TrialJob, stage: Path, progress: _Progress) -> dict:
    import torch

    from hrsam.attention import variant_support
    from hrsam.data import build_dataset
    from hrsam.interactive import evaluate
    from hrsam.models import build_model, load_model
    from hrsam.profiling import measure

    cfg = job.config
    if job.threads:
        torch.set_num_threads(job.threads)
    device = torch.device(cfg["device"])
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device=cuda but this machine has no CUDA device")
    m = cfg["model"]
    reasons = variant_support(m["attention"], m["kernel"], device, torch.float32)
    if reasons:
        raise RuntimeError(
            f"attention {m['attention']} with kernel {m['kernel']} cannot run on "
            f"{device.type}: {'; '.join(reasons)}"
        )
    overrides = model_overrides(m)
    out: dict = {"metrics": {}}
    if cfg["train"]["enabled"]:
        state, info = train_cached(job, device, progress)
        model = build_model(m["preset"], **overrides)
        model.load_state_dict(state)
        out["metrics"].update(info)
        out["weights"] = f"trained:{job.train_key}"
    else:
        model = load_model(m["preset"], m["checkpoint"], **overrides)
        out["weights"] = m["checkpoint"] or "random"
        if not m["checkpoint"]:
            log.warning("no checkpoint for %s: evaluating random weights", m["preset"])
    model.to(device).eval()
    data = cfg["data"]
    kwargs = _dataset_kwargs(data, "val")
    dataset = build_dataset(data["name"], data["root"], **kwargs)
    if data["limit"]:
        dataset = [dataset[i] for i in range(min(data["limit"], len(dataset)))]
    if cfg["bench"]["enabled"]:
        progress(f"benchmark at ts {cfg['bench']['ts']}", force=True)
        b = cfg["bench"]
        out["metrics"].update(
            measure(model, dataset[0].image, b["ts"], reps=b["reps"], sat_points=b["sat_points"])
        )
    ev = cfg["eval"]
    with torch.no_grad():
        result = evaluate(
            model,
            dataset,
            ev["protocol"],
            ev["ts"],
            ev["max_clicks"],
            cfg["seed"],
            progress=lambda i, n, name: progress(f"evaluate {i}/{n}"),
        )
    summary = result.summary()
    # the benchmark's encoder/decoder timings (fixed input, warm) win over the evaluation's
    for key, value in summary.items():
        out["metrics"].setdefault(key, value)
    curve = result.ious.mean(axis=0)
    for k, v in enumerate(curve, start=1):
        out["metrics"][f"miou@{k}"] = float(v)
    out["miou_curve"] = [float(v) for v in curve]
    result.write_csv(stage)
    return out


def _dataset_kwargs(data: dict, split: str) -> dict:
    return dataset_kwargs(flatten({"data": data}), split)


def train_cached(job: TrialJob, device, progress: _Progress) -> tuple[dict, dict]:
    """The weights of this trial's training, trained once per training key (trials that need the
    same model wait on a lock and reuse it). Returns (state dict, {train_s, train_loss})."""
    from hrsam.data import build_dataset
    from hrsam.models import build_model, save_checkpoint
    from hrsam.models.checkpoint import read_state
    from hrsam.ssm.scan import default_scan
    from hrsam.train.loop import TrainConfig, train

    cfg = job.config
    folder = Path(job.folder) / "cache" / "train" / job.train_key
    with file_lock(folder / ".lock"):
        info_path = folder / "train.json"
        if (folder / "model.pt").exists() and info_path.exists():
            progress(f"reusing training {job.train_key}", force=True)
            return read_state(folder / "model.pt")["state_dict"], json.loads(info_path.read_text())
        m = cfg["model"]
        overrides = {
            k: m[k] for k in ("attention", "window_size", "cycle_repeats", "anchor_sizes") if m[k]
        }
        if m["scan"] is not None:  # train with this device's fastest scan (same function)
            overrides["scan"] = "none" if m["scan"] == "none" else default_scan(device)
        model = build_model(m["preset"], **overrides).to(device)
        t = cfg["train"]
        tc = TrainConfig(
            steps=t["steps"],
            ts=t["ts"],
            batch_size=t["batch"],
            lr=t["lr"],
            warmup=t["warmup"],
            seed=cfg["seed"],
            ckpt_every=t["ckpt_every"],
        )
        dataset = build_dataset(
            cfg["data"]["name"], cfg["data"]["root"], **_dataset_kwargs(cfg["data"], "train")
        )
        start = time.perf_counter()
        state = train(
            model,
            dataset,
            tc,
            folder,
            progress=lambda s, n, loss: progress(f"train {s}/{n} loss {loss:.3f}"),
        )
        info = {"train_s": time.perf_counter() - start, "train_loss": state.losses[-1]}
        save_checkpoint(model.cpu(), folder / "model.pt", training=asdict(tc))
        tmp = info_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(info))
        tmp.replace(info_path)
        return model.state_dict(), info
