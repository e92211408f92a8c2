"""Latency, memory and FLOPs of interactive segmenters: the one way everything is timed
(eval-protocol E).

``time_fn`` (warm-up, synchronize, median and spread) and ``PeakMemory`` (CUDA allocator peak, or
on CPU the peak of tensor memory replayed from the profiler's allocation events) serve the
benchmarks and the sweep trials alike; ``measure`` is what one trial records.

``sat_latency`` is SegNext's "segment anything task" latency: encode one image once, then decode
16 x 16 = 256 single positive clicks at the centres of a regular grid over the input canvas, one
prompt at a time with no previous mask, wall clock end to end. Unlike SegNext's notebook (one run,
no warm-up) we warm up once and synchronize CUDA, so numbers are comparable across runs on the same
device; compare only timings taken on the same device.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from hrsam import names
from hrsam.models.predictor import Predictor
from hrsam.precision import autocast, check_precision


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


@torch.no_grad()
def sat_latency(
    model,
    image: np.ndarray,
    ts: int = 1024,
    points_per_side: int = 16,
    warmup: int = 1,
    precision: str = "fp32",
) -> dict[str, float]:
    """SAT latency of ``model`` on one (H, W, 3) image at target size ``ts``.

    Returns:
        ``sat_s`` (encoder + all grid prompts, seconds), ``encoder_ms`` and ``decoder_ms``
        (median per prompt).
    """
    predictor = Predictor(model, ts)
    device = predictor.device
    cell = ts / points_per_side
    centres = (np.arange(points_per_side) + 0.5) * cell
    prompts = [
        torch.tensor([[[x, y]]], dtype=torch.float32, device=device)
        for y in centres
        for x in centres
    ]  # (x, y) on the ts canvas
    label = torch.ones(1, 1, dtype=torch.long, device=device)

    def run() -> tuple[float, list[float]]:
        with autocast(device, precision):
            return _run()

    def _run() -> tuple[float, list[float]]:
        start = time.perf_counter()
        predictor.set_image(image)
        sync(device)
        enc = time.perf_counter() - start
        times = []
        for p in prompts:
            t0 = time.perf_counter()
            model.decode(predictor.embedding, p, label, None)
            sync(device)
            times.append(time.perf_counter() - t0)
        return enc, times

    for _ in range(warmup):
        run()
    enc, times = run()
    return {
        names.SAT_S: enc + sum(times),
        names.ENCODER_MS: enc * 1e3,
        names.DECODER_MS: float(np.median(times)) * 1e3,
    }


def _attention_macs(
    pattern: str, grids, dim: int, window_size: int, shifted: bool, rule: str = "v2"
) -> float:
    """Multiply-accumulates of QK^T and PV for one attention layer (all heads)."""
    from hrsam.attention.windows import padded_shape, window_plan

    if pattern == "global":
        return sum(2.0 * (h * w) ** 2 * dim for h, w in grids)
    s = window_size**2
    if pattern == "shifted_kv":
        queries = sum(h * w for h, w in grids)
    elif pattern == "swin":
        queries = sum(
            padded_shape(g, window_size, False)[1] * padded_shape(g, window_size, False)[2]
            for g in grids
        )
    else:  # window, shifted_pad: every slot is a query
        plan = window_plan(grids, window_size, shifted and pattern != "window", shift_rule=rule)
        queries = plan.num_slots
    return 2.0 * queries * s * dim


def encoder_flops(preset, ts: int) -> float:
    """FLOPs (2 x MACs) of one image encoder forward at ``ts`` x ``ts``, counted analytically from
    a `ModelPreset` (linear layers, attention products, scans, neck, and the decoder's detail
    path's encoder, which runs once per image with it; norms and activations are left out)."""
    p = preset
    c, g = p.embed_dim, ts // 16
    grids = [(g, g)] + [(s // 16, s // 16) for s in p.anchor_sizes]
    tokens = sum(h * w for h, w in grids)
    macs = tokens * c * 3 * 16 * 16  # patch embedding
    for i in range(p.depth):
        macs += tokens * c * (3 * c + c + 2 * 4 * c)  # qkv, proj, MLP
        if p.family == "sam":
            ws = p.window_size
            if p.attention == "global" and i in p.global_attn_indexes:
                macs += 2.0 * tokens**2 * c + 2.0 * tokens * (2 * g) * c  # + rel-pos bias
            else:
                slots = (-(-g // ws) * ws) ** 2
                macs += 2.0 * slots * ws * ws * c + 2.0 * slots * 2 * ws * c
        else:
            macs += _attention_macs(p.attention, grids, c, p.window_size, i % 2 == 1, p.shift)
    if p.family == "sam":
        macs += tokens * c * p.out_dim + tokens * p.out_dim * p.out_dim * 9
    else:
        n, r = p.state_dim, p.cycle_repeats
        scan = tokens * c * (2 * c + (c + 2 * n) + c) + 3 * r * tokens * c * n
        n_scans = 0 if p.scan == "none" else len(p.ssm_indexes) * (2 if p.anchor_sizes else 1)
        macs += n_scans * scan
        width = c * len(grids)
        macs += len(p.out_indexes) * g * g * width * p.out_dim + g * g * p.out_dim * 9
    if p.detail:  # hrsam.models.detail.DetailEncoder: two strided 3x3 convs, T -> T/2 -> T/4
        macs += (ts // 2) ** 2 * p.detail * 3 * 9 + (ts // 4) ** 2 * p.detail * p.detail * 9
    return 2.0 * macs


@torch.no_grad()
def measure(
    model,
    image: np.ndarray,
    ts: int,
    reps: int = 5,
    warmup: int = 1,
    sat_points: int = 16,
    precision: str = "fp32",
) -> dict[str, float]:
    """What one sweep trial records about speed and size at target size ``ts``, in
    ``precision`` (fp32, or bf16 / fp16 under autocast).

    Returns:
        ``encoder_ms`` (median of ``reps`` encoder forwards on a ts x ts input) and
        ``encoder_ms_iqr`` (half the inter-quartile range), ``peak_mem_mb`` (peak memory of one
        encoder forward, see `PeakMemory`), SAT latency on ``image`` (``sat_s``, ``decoder_ms``
        median per prompt), ``params`` (all parameters) and ``gflops`` (encoder, analytic).
    """
    check_precision(precision)
    model.eval()
    device = next(model.parameters()).device
    x = torch.randn(1, 3, ts, ts, device=device)

    def encode():
        with autocast(device, precision):
            return model.encode(x)

    timing = time_fn(encode, device, warmup=warmup, reps=reps)
    with PeakMemory(device) as peak:
        encode()
    sat = sat_latency(model, image, ts, sat_points, warmup=warmup, precision=precision)
    return {
        names.ENCODER_MS: timing.median_ms,
        names.ENCODER_MS_IQR: timing.spread_ms,
        names.DECODER_MS: sat[names.DECODER_MS],
        names.SAT_S: sat[names.SAT_S],
        names.PEAK_MEM_MB: peak.mb,
        names.PARAMS: float(sum(p.numel() for p in model.parameters())),
        names.GFLOPS: encoder_flops(model.preset, ts) / 1e9,
    }
