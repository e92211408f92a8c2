"""One attention benchmark case and how it is measured (``python -m benchmarks.attention``).

Holds the case (pattern, kernel, token grid, dtype) and its result row, the useful-FLOP count and
the memory estimate that turn a case into an ``oom`` or ``skipped`` row, the `Runner` that checks
a case against the fp32 ``math`` kernel of its pattern before it times forward and backward, and
the interleaved ``swin`` / ``shifted_kv`` training rounds. `benchmarks.attention` parses the
command line, prints the table and the target checks and writes the CSV.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from benchmarks._scaffold import DTYPES
from benchmarks._timing import PeakMemory, ratio_interval, sync, time_fn
from hrsam.attention import Rope2d, get_attention, get_kernel
from hrsam.attention import variant_support as _support
from hrsam.attention.gather import generic_index_backward
from hrsam.attention.windows import window_plan

HEADS, HEAD_DIM = 12, 64
GENERIC = "+index"  # pattern suffix: the generic index backward (before the scatter-add gathers)


@dataclass(frozen=True)
class BenchCase:
    """One timed configuration: a pattern (``+index`` suffix: the generic index backward) with a
    kernel on a ``grid`` x ``grid`` token image."""

    pattern: str
    kernel: str
    grid: int
    dtype: str = "fp32"
    window_size: int = 16
    shifted: bool = True
    rope: bool = True

    def __post_init__(self) -> None:
        if self.grid < 1:
            raise ValueError(f"grid={self.grid} must be >= 1 token")

    @property
    def base(self) -> str:
        """The registered pattern name (without the ``+index`` suffix)."""
        return self.pattern.removesuffix(GENERIC)


@dataclass
class BenchResult:
    """What `Runner.run` measured for a case (None: not measured), its status and notes."""

    case: BenchCase
    fwd_ms: float | None = None
    fwd_spread_ms: float | None = None
    bwd_ms: float | None = None
    train_ms: float | None = None
    gflops: float | None = None
    peak_mb: float | None = None
    max_err: float | None = None
    status: str = "ok"
    notes: list[str] = field(default_factory=list)

    @property
    def fwd_bwd_ms(self) -> float | None:
        return None if self.fwd_ms is None or self.bwd_ms is None else self.fwd_ms + self.bwd_ms

    def row(self) -> dict:
        c = asdict(self.case)
        return {
            **c,
            "fwd_ms": round_or_none(self.fwd_ms),
            "fwd_spread_ms": round_or_none(self.fwd_spread_ms),
            "bwd_ms": round_or_none(self.bwd_ms),
            "fwd_bwd_ms": round_or_none(self.fwd_bwd_ms),
            "train_ms": round_or_none(self.train_ms),
            "gflops": round_or_none(self.gflops),
            "peak_mb": round_or_none(self.peak_mb),
            "max_err": None if self.max_err is None else f"{self.max_err:.2e}",
            "status": self.status,
        }


def round_or_none(x: float | None) -> float | None:
    """``x`` to one decimal, None stays None (the CSV's number format)."""
    return None if x is None else round(x, 1)


def keys_per_query(case: BenchCase) -> int:
    return case.grid**2 if case.base == "global" else case.window_size**2


def useful_flops(case: BenchCase) -> float:
    """Forward FLOPs of real queries: QK^T and PV, 2 * 2 * L * K * H * D."""
    return 4.0 * case.grid**2 * keys_per_query(case) * HEADS * HEAD_DIM


def estimated_bytes(case: BenchCase, backward: bool) -> float:
    """Rough peak bytes: qkv and outputs, plus materialized scores for math / eager paths."""
    itemsize = torch.finfo(DTYPES[case.dtype]).bits // 8
    length = case.grid**2
    if case.base == "global":
        slots = length
    else:
        slots = window_plan([(case.grid, case.grid)], case.window_size, case.shifted).num_slots
    tensors = (3 * (length + 1) + 6 * slots + 2 * length) * HEADS * HEAD_DIM * itemsize
    materializes = case.kernel == "math" or (case.kernel == "flex" and not _flex_compiled())
    scores = slots * keys_per_query(case) * HEADS * 4 if materializes else 0
    return (tensors + 3 * scores) * (2.5 if backward else 1.0)


def _flex_compiled() -> bool:
    return os.environ.get("HRSAM_FLEX_COMPILE", "1") != "0"


def _attend(case: BenchCase, qkv: torch.Tensor, kernel: str | None = None) -> torch.Tensor:
    pattern = get_attention(case.base)(case.window_size, case.shifted)
    rope = Rope2d(HEAD_DIM) if case.rope else None
    k = get_kernel(kernel or case.kernel)
    if case.pattern.endswith(GENERIC):
        with generic_index_backward():
            return pattern.attend(qkv, ((case.grid, case.grid),), k, rope, HEAD_DIM**-0.5)
    return pattern.attend(qkv, ((case.grid, case.grid),), k, rope, HEAD_DIM**-0.5)


class Runner:
    """Runs cases on one device, caching the fp32 math reference of each (pattern, grid)."""

    def __init__(
        self,
        device: torch.device,
        budget_gb: float,
        max_case_s: float,
        reps: int,
        matmul_rate: float,
    ) -> None:
        self.device = device
        self.budget = budget_gb * 2**30
        self.max_case_s = max_case_s
        self.reps = reps
        self.matmul_rate = matmul_rate  # GFLOP/s, for time estimates
        self._inputs: dict[int, torch.Tensor] = {}
        self._refs: dict[tuple, tuple[torch.Tensor, float]] = {}

    def inputs(self, grid: int) -> torch.Tensor:
        if grid not in self._inputs:
            self._inputs.clear()
            self._refs.clear()
            gen = torch.Generator().manual_seed(grid)
            shape = (1, grid * grid + 1, 3, HEADS, HEAD_DIM)
            self._inputs[grid] = torch.randn(shape, generator=gen).to(self.device)
        return self._inputs[grid]

    def reference(self, case: BenchCase) -> tuple[torch.Tensor, float]:
        """fp32 math output, and the error of same-dtype math against it (0 for fp32)."""
        key = (case.base, case.grid, case.dtype)
        if key not in self._refs:
            qkv = self.inputs(case.grid)
            with torch.no_grad():
                ref = _attend(case, qkv, "math")
                lp_err = 0.0
                if case.dtype != "fp32":
                    lp = _attend(case, qkv.to(DTYPES[case.dtype]), "math").float()
                    lp_err = (lp - ref).abs().max().item()
            self._refs[key] = (ref, lp_err)
        return self._refs[key]

    def run(self, case: BenchCase) -> BenchResult:
        res = BenchResult(case)
        dtype = DTYPES[case.dtype]
        reasons = _support(case.base, case.kernel, self.device, dtype)
        if reasons:
            res.status = "unsupported: " + "; ".join(reasons)
            return res
        est = estimated_bytes(case, backward=False) + estimated_bytes(
            BenchCase(case.base, "math", case.grid), backward=False
        )
        if est > self.budget:
            res.status = f"oom: needs ~{est / 2**30:.1f} GB > budget {self.budget / 2**30:.1f} GB"
            return res
        est_s = useful_flops(case) * 3 * (self.reps + 2) / (self.matmul_rate * 1e9)
        if est_s > self.max_case_s:
            res.status = f"skipped: ~{est_s:.0f} s > --max-case-s {self.max_case_s:.0f}"
            return res
        try:
            self._measure(case, res, dtype)
        except torch.OutOfMemoryError as e:
            res.status = f"oom: {str(e).splitlines()[0][:80]}"
        except (RuntimeError, NotImplementedError) as e:
            first = str(e).splitlines()[0]
            kind = "oom" if "can't allocate memory" in first else "error"
            res.status = f"{kind}: {first[:100]}"
        return res

    def _measure(self, case: BenchCase, res: BenchResult, dtype: torch.dtype) -> None:
        qkv = self.inputs(case.grid).to(dtype)
        ref, lp_err = self.reference(case)
        with torch.no_grad():
            out = _attend(case, qkv).float()
        res.max_err = (out - ref).abs().max().item()
        tol = 1e-4 if case.dtype == "fp32" else 2 * lp_err
        if not res.max_err <= tol:
            res.status = f"mismatch: max err {res.max_err:.2e} > {tol:.2e}"
            return
        del out
        with torch.no_grad(), PeakMemory(self.device) as mem:
            _attend(case, qkv)
        res.peak_mb = mem.mb
        with torch.no_grad():
            t = time_fn(lambda: _attend(case, qkv), self.device, warmup=1, reps=self.reps)
        res.fwd_ms, res.fwd_spread_ms = t.median_ms, t.spread_ms
        res.gflops = useful_flops(case) / (t.median_ms * 1e6)
        back = _support(case.base, case.kernel, self.device, dtype, backward=True)
        if back:
            res.notes.append("bwd unsupported: " + "; ".join(back))
            return
        if estimated_bytes(case, backward=True) > self.budget:
            res.notes.append("bwd oom (estimated)")
            return
        leaf = qkv.detach().requires_grad_(True)
        grad = torch.randn(
            leaf.shape[0], case.grid**2, HEADS, HEAD_DIM, device=self.device, dtype=dtype
        )
        times, train = [], []
        for i in range(self.reps + 1):
            sync(self.device)
            t0 = time.perf_counter()
            out = _attend(case, leaf)
            sync(self.device)
            start = time.perf_counter()
            out.backward(grad)
            sync(self.device)
            if i:  # the first backward is warm-up
                times.append(time.perf_counter() - start)
                train.append(time.perf_counter() - t0)
            leaf.grad = None
        res.bwd_ms = sorted(times)[len(times) // 2] * 1e3
        res.train_ms = sorted(train)[len(train) // 2] * 1e3


def paired_training(
    runner: Runner, grid: int, kernel: str, dtype: str, window: int, rope: bool, rounds: int
) -> dict:
    """``swin`` against ``shifted_kv`` fwd+bwd with ``kernel``, interleaved: each round times one
    of each (order alternating, ABBA), so drift of a shared machine hits both alike. Returns the
    per-round ratios swin / shifted_kv, their geometric mean and its 95% percentile bootstrap
    interval (`reports.stats.bootstrap`: 2000 resamples of the rounds, fixed seed)."""
    cases = {
        p: BenchCase(p, kernel, grid, dtype, window, True, rope) for p in ("swin", "shifted_kv")
    }
    qkv = runner.inputs(grid).to(DTYPES[dtype])
    grad = torch.randn(qkv.shape[0], grid**2, HEADS, HEAD_DIM, device=qkv.device, dtype=qkv.dtype)

    def once(pattern: str) -> float:
        leaf = qkv.detach().requires_grad_(True)
        sync(runner.device)
        start = time.perf_counter()
        _attend(cases[pattern], leaf).backward(grad)
        sync(runner.device)
        return time.perf_counter() - start

    for p in cases:  # warm-up
        once(p)
    times = {p: [] for p in cases}
    for i in range(rounds):
        for p in ("swin", "shifted_kv") if i % 2 == 0 else ("shifted_kv", "swin"):
            times[p].append(once(p))
    ratio, lo, hi = ratio_interval(times["swin"], times["shifted_kv"])
    return {
        "grid": grid,
        "kernel": kernel,
        "swin_ms": 1e3 * float(np.median(times["swin"])),
        "kv_ms": 1e3 * float(np.median(times["shifted_kv"])),
        "ratio": ratio,
        "lo": lo,
        "hi": hi,
        "rounds": rounds,
    }
