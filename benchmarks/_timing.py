"""Benchmark helpers: machine names, matmul rates, memory budget, CSV, paired ratios. Timing and
peak memory are `hrsam.profiling`'s (re-exported here), the one way everything is timed; the
command line, the printed table and the results files are `benchmarks._scaffold`'s."""

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
    "dense_matmul_gflops",
    "device_name",
    "matmul_gflops",
    "median_ms",
    "memory_budget_bytes",
    "paired_ratio",
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


def dense_matmul_gflops(device: torch.device, dtype: torch.dtype) -> float:
    """Dense 2048^3 matmul rate (median of 5 after warm-up)."""
    a = torch.randn(2048, 2048, device=device, dtype=dtype)
    mm = time_fn(lambda: a @ a, device, warmup=2, reps=5)
    return 2 * 2048**3 / (mm.median_ms * 1e6)


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


def paired_ratio(before, after) -> dict[str, float]:
    """`ratio_interval` as result-row fields: ``ratio``, ``lo`` and ``hi``, to 3 decimals."""
    ratio, lo, hi = ratio_interval(before, after)
    return {"ratio": round(ratio, 3), "lo": round(lo, 3), "hi": round(hi, 3)}


def median_ms(seconds) -> float:
    """The median of timings in seconds, in milliseconds to 2 decimals (a result-row field)."""
    return round(1e3 * float(np.median(seconds)), 2)
