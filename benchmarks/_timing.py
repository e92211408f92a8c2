"""The one way benchmarks time and measure memory: warm-up, synchronize, median and spread.

Peak memory: on CUDA ``torch.cuda.max_memory_allocated``; on CPU the peak of tensor memory
replayed from the torch profiler's allocation events (see `PeakMemory`).
"""

from __future__ import annotations

import contextlib
import csv
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass(frozen=True)
class Timing:
    median_ms: float
    spread_ms: float  # half the inter-quartile range (min-max when fewer than 4 reps)
    reps: int


def time_fn(
    fn: Callable[[], object], device: torch.device, warmup: int = 1, reps: int = 3
) -> Timing:
    """Median wall time of ``fn()`` in ms after ``warmup`` calls, synchronized on CUDA."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        sync(device)
        times.append((time.perf_counter() - start) * 1e3)
    times.sort()
    if len(times) >= 4:
        q = statistics.quantiles(times, n=4)
        spread = (q[2] - q[0]) / 2
    else:
        spread = (times[-1] - times[0]) / 2
    return Timing(statistics.median(times), spread, reps)


@contextlib.contextmanager
def _quiet_fds():
    """Silences the profiler's C++ start/stop lines, which bypass Python's streams."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 1)
        os.dup2(null, 2)
        yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, null):
            os.close(fd)


class PeakMemory:
    """Context manager measuring the peak of memory allocated inside it, in MB (``.mb``).

    CUDA: ``torch.cuda.max_memory_allocated`` above what was allocated on entry. CPU: the torch
    profiler's allocation and free events replayed in time order (tensor memory, not RSS; the
    allocator's caching and the interpreter are not counted).
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.mb: float | None = None

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
        else:
            self._prof = torch.profiler.profile(
                activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True
            )
            with _quiet_fds():
                self._prof.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.mb = (torch.cuda.max_memory_allocated(self.device) - self._base) / 2**20
            return
        with _quiet_fds():
            self._prof.__exit__(*exc)
        points = sorted(
            (e.time_range.start, e.self_cpu_memory_usage)
            for e in self._prof.events()
            if e.self_cpu_memory_usage
        )
        current = peak = 0
        for _, nbytes in points:
            current += nbytes
            peak = max(peak, current)
        self.mb = peak / 2**20


def device_name(device: torch.device) -> str:
    """Short, file-name-safe name of the machine: ``cpu-<model>-<n>c`` or the GPU model."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device).lower().replace(" ", "-")
    model = platform.processor() or "cpu"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{model} ({torch.get_num_threads()} threads, {os.cpu_count()} cores)"


def matmul_gflops(
    batch: int, m: int, k: int, n: int, device: torch.device, dtype: torch.dtype, reps: int = 5
) -> float:
    """Measured GFLOP/s of a (batch, m, k) @ (batch, k, n) batched matmul."""
    a = torch.randn(batch, m, k, device=device, dtype=dtype)
    b = torch.randn(batch, k, n, device=device, dtype=dtype)
    t = time_fn(lambda: torch.bmm(a, b), device, warmup=2, reps=reps)
    return 2 * batch * m * k * n / (t.median_ms * 1e6)


def memory_budget_bytes(device: torch.device, fraction: float = 0.6) -> float:
    """``fraction`` of the device's memory (GPU memory on CUDA, physical RAM on CPU)."""
    if device.type == "cuda":
        return fraction * torch.cuda.get_device_properties(device).total_memory
    return fraction * os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def peak_memory_kind(device: torch.device) -> str:
    """How `PeakMemory` measured, for result headers."""
    return "CUDA max allocated" if device.type == "cuda" else "peak tensor memory (profiler)"


def write_csv(path, fieldnames: list[str], rows: list[dict]) -> None:
    """Writes rows through a temporary file and a rename, so a reader never sees half a table."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fieldnames)
        w.writeheader()
        w.writerows(rows)
    tmp.replace(path)
