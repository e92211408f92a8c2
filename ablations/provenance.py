"""Where, when and with what a trial ran: git state, versions, device, precision, the kernels
this device runs, host and job (`provenance`), and whether its timings shared the machine with
another trial of the sweep (`timing`: the markers and intervals the trials leave in the sweep
folder)."""

from __future__ import annotations

import contextlib
import os
import platform
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import submitit


def git_state(root: Path) -> dict[str, str]:
    """The code's commit and whether the tree differs from it: modified, staged or untracked
    files (ignored ones, such as outputs and the venv, do not count)."""

    def git(*args: str) -> str:
        try:
            return subprocess.run(
                ["git", *args], cwd=root, capture_output=True, text=True, timeout=10
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    return {
        "git_sha": git("rev-parse", "HEAD") or "unknown",
        "git_dirty": str(bool(git("status", "--porcelain", "--untracked-files=normal"))),
    }


def provenance(resolved: dict) -> dict:
    """Where and with what a trial ran: git sha and dirty flag, versions, device, precision,
    kernels that run here in that precision, the environment report's summary
    (`hrsam.info.summary`), host."""
    import torch

    from hrsam import info
    from hrsam.attention.kernels import KERNELS, get_kernel
    from hrsam.precision import dtype, tf32_enabled

    device = torch.device(resolved["device"] if resolved["device"] != "auto" else "cpu")
    if device.type == "cuda" and torch.cuda.is_available():
        device_name = torch.cuda.get_device_name(device)
    else:
        device_name = _cpu_name()
    precision = resolved.get("precision", "fp32")
    kernels = [k for k in KERNELS.names() if not get_kernel(k).support(device, dtype(precision))]
    return {
        **git_state(Path(__file__).resolve().parent.parent),
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


INTERVALS = "trial_intervals.log"  # in the sweep folder: host, trial id, start, end per line


def log_interval(folder: Path, trial_id: str, start: float, end: float) -> None:
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


@dataclass
class Timing:
    """When a trial's timed work ran and which other trials of the sweep overlapped it."""

    start: float
    end: float = 0.0
    shared_with: list[str] = field(default_factory=list)

    def facts(self) -> dict[str, str]:
        """The record's provenance entries."""
        return {
            "timing_start": f"{self.start:.3f}",
            "timing_end": f"{self.end:.3f}",
            "timing_shared": str(bool(self.shared_with)),
            "shared_with": ",".join(sorted(self.shared_with)),
        }


@contextlib.contextmanager
def timing(folder: Path, trial_id: str):
    """Times a block: afterwards the `Timing` says whether another trial of this sweep ran on
    this machine at some moment of it (a timing taken then says so)."""
    t = Timing(time.time())
    yield t
    t.end = time.time()
    t.shared_with = sorted(others_overlapping(folder, trial_id, t.start, t.end))


@contextlib.contextmanager
def running(folder: Path, trial_id: str):
    """Marks the trial as running (other trials see it) and logs its interval when it ends
    (before the marker goes: no gap between them). Yields {"start", "end"} (wall clock, the
    end filled in when the block ends), the record's provenance entries."""
    when = {"start": f"{time.time():.3f}"}  # before the marker: overlap with others
    marker = folder / "trials" / f".{trial_id}.running"
    marker.write_text(f"{socket.gethostname()} {os.getpid()}")
    try:
        yield when
    finally:
        when["end"] = f"{time.time():.3f}"
        log_interval(folder, trial_id, float(when["start"]), float(when["end"]))
        marker.unlink(missing_ok=True)
