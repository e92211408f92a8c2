"""Benchmark helpers: machine names, matmul rate, memory budget, CSV. Timing and peak memory are
`hrsam.profiling`'s (re-exported here), the one way everything is timed."""

from __future__ import annotations

import csv
import os
import platform

import numpy as np
import torch

from hrsam.profiling import PeakMemory, Timing, sync, time_fn

__all__ = [
    "PeakMemory",
    "Timing",
    "device_name",
    "matmul_gflops",
    "memory_budget_bytes",
    "peak_memory_kind",
    "ratio_interval",
    "sync",
    "time_fn",
    "write_csv",
]


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


def ratio_interval(before, after) -> tuple[float, float, float]:
    """Paired timings (one pair per round or step) -> the geometric mean of the ratios
    before / after and its 95% percentile bootstrap interval (`reports.stats.bootstrap` over the
    pairs, on the log ratios, fixed seed)."""
    from reports import stats

    ci = stats.bootstrap(np.log(np.asarray(before, float) / np.asarray(after, float)))
    return float(np.exp(ci.mean)), float(np.exp(ci.lo)), float(np.exp(ci.hi))
