"""Submitting trials with submitit and waiting for them without ever hanging.

``debug`` runs trials in this process one after another; ``local`` runs each as a subprocess,
at most ``executor.parallel`` at once (1 by default, so timing trials never share the CPU);
``slurm`` submits one job array throttled to ``executor.parallel``. Waiting polls result files,
not ``sacct`` (single-node and many real clusters have no accounting: SLURM's ``slurmdbd`` is
optional): a local job whose process ended without a result, a SLURM job that left ``squeue``
without one, or any job past its deadline (``timeout_min`` plus a grace period) is reported failed.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import submitit

from ablations.trial import RunTrial, TrialJob

GRACE_S = 120  # after timeout_min: submitit's own timeout handling, result pickling, slow disks


@dataclass
class Tracked:
    trial: TrialJob
    job: submitit.Job | None = None
    started: float | None = None
    result: dict | None = None
    error: str | None = None  # a failure outside the trial (killed, timed out, lost)
    gone_polls: int = 0
    running_since: float | None = None  # deadlines count from here (SLURM: not while pending)

    @property
    def finished(self) -> bool:
        return self.result is not None or self.error is not None


@dataclass
class Monitor:
    """The one-line status: done / running / failed / eta, and the running trials' phases."""

    total: int
    folder: Path
    stream: object = field(default_factory=lambda: sys.stderr)
    start: float = field(default_factory=time.monotonic)
    last_print: float = 0.0
    last_line: str = ""

    def __call__(self, tracked: list[Tracked], force: bool = False) -> None:
        now = time.monotonic()
        tty = getattr(self.stream, "isatty", lambda: False)()
        if not force and now - self.last_print < (0.5 if tty else 15.0):
            return
        self.last_print = now
        done = [t for t in tracked if t.finished]
        failed = [t for t in done if t.error or (t.result or {}).get("status") == "FAILED"]
        # running = started by the scheduler (SLURM: left PENDING), not merely submitted
        running = [t for t in tracked if t.running_since is not None and not t.finished]
        pending = [t for t in tracked if t.started is not None and t.running_since is None]
        elapsed = now - self.start
        eta = ""
        if done:
            per = elapsed / len(done)
            eta = f" eta {_duration(per * (self.total - len(done)))}"
        phases = []
        for t in running[:2]:
            phase = self.folder / "trials" / f".{t.trial.trial_id}.progress"
            with contextlib.suppress(OSError):
                phases.append(f"{t.trial.label}: {phase.read_text().strip()}")
        queued = f", {len(pending)} pending" if pending else ""
        line = (
            f"[sweep] {len(done)}/{self.total} done, {len(running)} running{queued}, "
            f"{len(failed)} failed, {_duration(elapsed)} elapsed{eta}"
            + (f" | {'; '.join(phases)}" if phases else "")
        )
        if line == self.last_line and not tty:
            return  # the same status again (the final one): once is enough
        self.last_line = line
        width = shutil.get_terminal_size((120, 20)).columns
        if tty:
            print(f"\r{line[: width - 1]:<{width - 1}}", end="", file=self.stream, flush=True)
        else:
            print(line, file=self.stream, flush=True)

    def close(self) -> None:
        if getattr(self.stream, "isatty", lambda: False)():
            print(file=self.stream)


def _duration(s: float) -> str:
    s = int(s)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def make_executor(cfg: dict, folder: Path) -> submitit.Executor:
    ex = cfg["executor"]
    name = ex["name"]
    kwargs = {}
    if name == "slurm":
        kwargs["slurm_max_num_timeout"] = ex["slurm"]["max_num_timeout"]
        kwargs["slurm_python"] = sys.executable
    executor = submitit.AutoExecutor(folder=folder / "jobs" / "%j", cluster=name, **kwargs)
    params = {
        "name": f"hrsam-{cfg['grid']}",
        "timeout_min": ex["timeout_min"],
        "cpus_per_task": ex["cpus_per_task"],
        "stderr_to_stdout": True,
    }
    if name == "slurm":
        s = ex["slurm"]
        params.update(
            mem_gb=ex["mem_gb"],
            slurm_array_parallelism=s["array_parallelism"],
            slurm_use_srun=s["use_srun"],
            # Slurm >= 22.05: srun no longer inherits --cpus-per-task from sbatch
            slurm_srun_args=["--cpus-per-task", str(ex["cpus_per_task"])],
            slurm_setup=list(s["setup"]),
            slurm_additional_parameters=dict(s["additional"]),
        )
        if ex["gpus_per_node"]:
            params["gpus_per_node"] = ex["gpus_per_node"]
        if s["partition"]:
            params["slurm_partition"] = s["partition"]
    executor.update_parameters(**params)
    return executor


def _squeue_state(job_id: str) -> str | None:
    """The job's SLURM state, "" once it left the queue, None when squeue cannot be asked."""
    try:
        out = subprocess.run(
            ["squeue", "-h", "-o", "%i %T", "-j", job_id],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        # "Invalid job id specified": the controller forgot it, i.e. it left the queue
        return "" if "Invalid job id" in out.stderr else None
    fields = out.stdout.split()
    return fields[1] if len(fields) >= 2 else ""


def _poll(t: Tracked, cluster: str, timeout_s: float) -> None:
    job = t.job
    if job.paths.result_pickle.exists():
        try:
            t.result = job.result()
        except Exception as e:  # the job raised outside run_trial (e.g. unpickling)
            t.error = f"job {job.job_id} failed: {str(e).strip()[-2000:]}"
        return
    if cluster == "local" and job.done():
        # the process ended and no result: killed (SIGKILL, OOM) or exited outside Python
        time.sleep(1.0)
        if not job.paths.result_pickle.exists():
            t.error = (
                f"job {job.job_id} ended without a result (state {job.state}); log: "
                f"{job.paths.stdout}"
            )
        return
    if cluster == "slurm":
        state = _squeue_state(str(job.job_id))
        if state and state != "PENDING" and t.running_since is None:
            t.running_since = time.monotonic()
        t.gone_polls = t.gone_polls + 1 if state == "" else 0
        if t.gone_polls >= 3 and not job.paths.result_pickle.exists():
            t.error = (
                f"SLURM job {job.job_id} left the queue without a result; log: {job.paths.stdout}"
            )
            return
    if t.running_since is not None and time.monotonic() - t.running_since > timeout_s:
        with contextlib.suppress(Exception):
            job.cancel(check=False)
        t.error = f"job {job.job_id} passed its deadline of {timeout_s:.0f}s and was cancelled"


def run(
    cfg: dict,
    jobs: list[TrialJob],
    folder: Path,
    on_done: Callable[[Tracked], None],
    poll_s: float = 1.0,
) -> list[Tracked]:
    """Runs ``jobs`` on the configured executor, calling ``on_done`` as each one ends."""
    cluster = cfg["executor"]["name"]
    tracked = [Tracked(j) for j in jobs]
    monitor = Monitor(len(jobs), folder)
    if not jobs:
        return tracked
    executor = make_executor(cfg, folder)
    timeout_s = cfg["executor"]["timeout_min"] * 60 + GRACE_S
    if cluster == "debug":
        for t in tracked:
            t.started = t.running_since = time.monotonic()
            monitor(tracked, force=True)
            t.job = executor.submit(RunTrial(), t.trial)
            try:
                t.result = t.job.result()
            except Exception as e:
                t.error = f"{type(e).__name__}: {e}"
            on_done(t)
        monitor(tracked, force=True)
        monitor.close()
        return tracked
    pending = list(tracked)
    if cluster == "slurm":
        with executor.batch():
            for t in pending:
                t.job = executor.submit(RunTrial(), t.trial)
        now = time.monotonic()
        for t in pending:
            t.started = now
        pending = []
    parallel = cfg["executor"]["parallel"]
    while True:
        running = [t for t in tracked if t.started is not None and not t.finished]
        while pending and len(running) < parallel:
            t = pending.pop(0)
            t.job = executor.submit(RunTrial(), t.trial)
            t.started = t.running_since = time.monotonic()
            running.append(t)
        for t in running:
            _poll(t, cluster, timeout_s)
            if t.finished:
                on_done(t)
        monitor(tracked)
        if not pending and all(t.finished for t in tracked):
            break
        time.sleep(poll_s)
    monitor(tracked, force=True)
    monitor.close()
    return tracked
