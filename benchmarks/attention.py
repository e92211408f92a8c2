"""Attention pattern x kernel x token grid: forward and backward time, useful FLOP/s, peak memory.

    python -m benchmarks.attention                       # 64x64, 128x128, 256x256 tokens, fp32
    python -m benchmarks.attention --grids 128 --patterns swin shifted_kv --kernels math sdpa
    python -m benchmarks.attention --dtype bf16 --device cuda

ViT-B attention shape: 12 heads x 64 channels, window 16, shifted blocks, RoPE on q and k (as in
HRSAM). Times the attention core: from projected qkv (raster order, plus the pad token's row) to
outputs in raster order, i.e. window gather/roll, masks, RoPE, kernel and scatter; the qkv and
output projections are the same for every pattern and are left out.

Each case is checked against the ``math`` kernel of the same pattern before it is timed. Cases
that cannot run are rows: ``unsupported: <reason>``, ``oom: ...`` (estimated memory over the
budget) or ``skipped: ...`` (estimated time over the per-case limit). Useful FLOPs count real
queries only: ``4 * L * keys_per_query * H * D`` forward, twice that backward. The last lines
compare against the targets of the attention-registry issue using ratios from this one run.

``fwd+bwd ms`` is the inference forward plus the backward (as the issue that asked for it adds
them); ``train ms`` is one forward with autograd plus its backward, timed as one. The row
``shifted_kv+index`` is ``shifted_kv`` with autograd's generic indexing backward
(`hrsam.attention.gather.generic_index_backward`), the training path before the scatter-add
gathers, so that a run times both.
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from benchmarks._timing import (
    PeakMemory,
    device_name,
    matmul_gflops,
    memory_budget_bytes,
    peak_memory_kind,
    ratio_interval,
    sync,
    time_fn,
    write_csv,
)
from hrsam import cli
from hrsam.attention import Rope2d, get_attention, get_kernel, list_attention, list_kernels
from hrsam.attention import variant_support as _support
from hrsam.attention.gather import generic_index_backward
from hrsam.attention.windows import window_plan

HEADS, HEAD_DIM = 12, 64
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
RESULTS = Path(__file__).parent / "results"
GENERIC = "+index"  # pattern suffix: the generic index backward (before the scatter-add gathers)


@dataclass(frozen=True)
class BenchCase:
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
            "fwd_ms": _r(self.fwd_ms),
            "fwd_spread_ms": _r(self.fwd_spread_ms),
            "bwd_ms": _r(self.bwd_ms),
            "fwd_bwd_ms": _r(self.fwd_bwd_ms),
            "train_ms": _r(self.train_ms),
            "gflops": _r(self.gflops),
            "peak_mb": _r(self.peak_mb),
            "max_err": None if self.max_err is None else f"{self.max_err:.2e}",
            "status": self.status,
        }


def _r(x: float | None) -> float | None:
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


def _fmt(x: float | None, nd: int = 1) -> str:
    return "-" if x is None else f"{x:.{nd}f}"


HEADER = [
    "pattern",
    "kernel",
    "grid",
    "fwd ms",
    "bwd ms",
    "fwd+bwd ms",
    "train ms",
    "GFLOP/s (real tokens)",
    "peak MB",
    "status",
]


def table_rows(results: list[BenchResult]) -> list[list[str]]:
    rows = []
    for r in results:
        c = r.case
        fwd = "-" if r.fwd_ms is None else f"{r.fwd_ms:.1f} ± {r.fwd_spread_ms:.1f}"
        bwd = _fmt(r.bwd_ms) if r.bwd_ms is not None else ("n/a" if r.notes else "-")
        # The table keeps the first reason; the CSV has all of them.
        status = r.status.split("; ")[0] + (f" ({r.notes[0]})" if r.notes else "")
        rows.append(
            [
                c.pattern,
                c.kernel,
                f"{c.grid}x{c.grid}",
                fwd,
                bwd,
                _fmt(r.fwd_bwd_ms),
                _fmt(r.train_ms),
                _fmt(r.gflops),
                _fmt(r.peak_mb, 0),
                status,
            ]
        )
    return rows


def render(rows: list[list[str]], header: list[str] = HEADER) -> str:
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)
    ]
    line = " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))
    sep = "-|-".join("-" * w for w in widths)
    body = [" | ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(["| " + line + " |", "|-" + sep + "-|", *("| " + b + " |" for b in body)])


def summary(results: list[BenchResult], bmm: dict[int, float], grid: int) -> list[str]:
    """Checks of the attention-registry issue at ``grid`` tokens, from this run's ratios."""
    ok = {
        (r.case.pattern, r.case.kernel): r
        for r in results
        if r.case.grid == grid and r.status == "ok" and r.fwd_ms
    }
    lines = [f"Targets at {grid}x{grid} tokens (ratios from this run):"]
    swin_math = ok.get(("swin", "math"))
    kv = [r for (p, _), r in ok.items() if p == "shifted_kv"]
    if not swin_math or not kv:
        missing = "  forward target not measured (need swin/math and shifted_kv at this grid)"
        return [*lines, missing, *training_checks(results, grid)]
    best = min(kv, key=lambda r: r.fwd_ms)
    speedup = swin_math.fwd_ms / best.fwd_ms
    lines.append(
        f"  {'PASS' if speedup >= 1.35 else 'FAIL'} shifted_kv/{best.case.kernel} forward is "
        f"{speedup:.2f}x faster than traditional Swin (swin/math) (target >= 1.35x)"
    )
    for r in kv:
        swin = ok.get(("swin", r.case.kernel))
        if swin is None:
            continue
        ratio = swin.fwd_ms / r.fwd_ms
        lines.append(
            f"  {'PASS' if ratio >= 1.0 else 'FAIL'} shifted_kv/{r.case.kernel} vs "
            f"swin/{r.case.kernel}: {ratio:.2f}x (target: no slower, >= 1.00x)"
        )
    lines += training_checks(results, grid)
    rate = bmm.get(grid)
    if rate:
        frac = best.gflops / rate
        lines.append(
            f"  {'PASS' if frac >= 0.5 else 'FAIL'} shifted_kv/{best.case.kernel} useful "
            f"{best.gflops:.1f} GFLOP/s = {100 * frac:.0f}% of a same-shape window bmm "
            f"({rate:.1f} GFLOP/s) (target >= 50%)"
        )
    return lines


def training_checks(results: list[BenchResult], grid: int) -> list[str]:
    """At ``grid``: ``shifted_kv`` fwd+bwd and train time against ``swin`` with the same kernel
    (target: no slower), and the scatter-add gathers against the generic index backward."""
    ok = {
        (r.case.pattern, r.case.kernel): r
        for r in results
        if r.case.grid == grid and r.status == "ok" and r.bwd_ms is not None
    }
    lines = []
    for (p, k), r in ok.items():
        swin = ok.get(("swin", k))
        if p != "shifted_kv" or swin is None:
            continue
        a, b = swin.fwd_bwd_ms / r.fwd_bwd_ms, swin.train_ms / r.train_ms
        lines.append(
            f"  {'PASS' if a >= 1.0 else 'FAIL'} shifted_kv/{k} fwd+bwd {r.fwd_bwd_ms:.0f} ms vs "
            f"swin/{k} {swin.fwd_bwd_ms:.0f} ms: {a:.2f}x (target: no slower, >= 1.00x); "
            f"train {r.train_ms:.0f} vs {swin.train_ms:.0f} ms: {b:.2f}x"
        )
    for (p, k), r in ok.items():
        new = ok.get(("shifted_kv", k))
        if p != "shifted_kv" + GENERIC or new is None:
            continue
        lines.append(
            f"       shifted_kv/{k} backward {r.bwd_ms:.0f} -> {new.bwd_ms:.0f} ms "
            f"({r.bwd_ms / new.bwd_ms:.2f}x), train {r.train_ms:.0f} -> {new.train_ms:.0f} ms "
            f"({r.train_ms / new.train_ms:.2f}x) with the scatter-add gathers "
            f"(generic index backward -> hrsam.attention.gather)"
        )
    return lines


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


def paired_lines(pairs: list[dict]) -> list[str]:
    """The target `shifted_kv` fwd+bwd no slower than `swin` (ratio >= 1.00), from the paired
    rounds, with the interval saying whether the two are separated at all."""
    lines = ["Training target, paired (interleaved rounds, ratio = swin / shifted_kv fwd+bwd):"]
    for r in pairs:
        sep = "" if r["lo"] > 1.0 or r["hi"] < 1.0 else ", not separated from 1.00"
        lines.append(
            f"  {'PASS' if r['ratio'] >= 1.0 else 'FAIL'} {r['grid']}x{r['grid']} {r['kernel']}: "
            f"{r['ratio']:.2f}x [{r['lo']:.2f}, {r['hi']:.2f}]{sep} (swin {r['swin_ms']:.0f} ms, "
            f"shifted_kv {r['kv_ms']:.0f} ms, medians of {r['rounds']} rounds)"
        )
    return lines


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = cli.ArgumentParser(
        prog="python -m benchmarks.attention",
        description="Attention pattern x kernel x token grid benchmark (forward, backward, "
        "useful GFLOP/s, peak memory), checked against the math kernel first.",
        epilog="examples:\n  python -m benchmarks.attention --grids 128 --patterns swin "
        "shifted_kv\n  python -m benchmarks.attention --dtype bf16 --device cuda",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--grids",
        type=int,
        nargs="+",
        default=[64, 128, 256],
        help="token grid sides (default: 64 128 256)",
    )
    p.add_argument(
        "--patterns",
        nargs="+",
        choices=[*list_attention(), "shifted_kv" + GENERIC],
        default=list_attention(),
        help="registered patterns; shifted_kv+index: the generic index backward",
    )
    p.add_argument("--kernels", nargs="+", choices=list_kernels(), default=list_kernels())
    p.add_argument("--dtype", choices=list(DTYPES), default="fp32")
    # explicit, never guessed from the host: the same command gives the same table on a GPU host
    p.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:<index>")
    p.add_argument("--window-size", type=int, default=16)
    p.add_argument("--no-rope", action="store_true", help="leave out RoPE on q and k")
    p.add_argument("--reps", type=int, default=3, help="timed repetitions per case (median)")
    p.add_argument(
        "--budget-gb",
        type=float,
        default=None,
        help="memory budget (default: 60%% of the device's memory)",
    )
    p.add_argument(
        "--max-case-s",
        type=float,
        default=60.0,
        help="skip cases estimated to take longer than this (default: 60)",
    )
    p.add_argument(
        "--pair-rounds",
        type=int,
        default=6,
        help="interleaved swin / shifted_kv fwd+bwd rounds per grid and kernel (0: none)",
    )
    p.add_argument("--quick", action="store_true", help="one repetition, no backward budget")
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="results folder (default: benchmarks/results/<device>)",
    )
    args = p.parse_args(argv)
    for g in args.grids:
        if g < 1:
            p.error(f"--grids {g}: a grid side must be >= 1 token")
    if args.window_size < 1:
        p.error(f"--window-size {args.window_size}: must be >= 1")
    if args.reps < 1:
        p.error(f"--reps {args.reps}: must be >= 1")
    if args.pair_rounds < 0:
        p.error(f"--pair-rounds {args.pair_rounds}: must be >= 0 (0: no paired rounds)")
    try:
        args.device = torch.device(args.device)
    except RuntimeError:
        p.error(f"--device {args.device!r}: not a torch device; use cpu or cuda")
    if args.device.type == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: CUDA is not available on this machine; use --device cpu")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = args.device
    reps = 1 if args.quick else args.reps
    budget = args.budget_gb or memory_budget_bytes(device) / 2**30
    dtype = DTYPES[args.dtype]
    slug = "cpu" if device.type == "cpu" else device_name(device)
    out_dir = args.out or RESULTS / slug
    print(
        f"device: {device_name(device)} | torch {torch.__version__} | dtype {args.dtype} | "
        f"heads {HEADS} x {HEAD_DIM} | window {args.window_size} | RoPE {not args.no_rope}",
        flush=True,
    )
    bmm = {}
    for g in args.grids:
        n_win = math.ceil(g / args.window_size) ** 2
        s = args.window_size**2
        bmm[g] = matmul_gflops(n_win * HEADS, s, HEAD_DIM, s, device, dtype)
        print(
            f"window-shaped bmm at {g}x{g} ({n_win * HEADS} x {s}x{HEAD_DIM}x{s}): "
            f"{bmm[g]:.1f} GFLOP/s",
            flush=True,
        )
    runner = Runner(device, budget, args.max_case_s, reps, max(bmm.values()))
    cases = [
        BenchCase(p, k, g, args.dtype, args.window_size, True, not args.no_rope)
        for g in args.grids
        for p in args.patterns
        for k in args.kernels
    ]
    results = []
    for i, case in enumerate(cases, 1):
        print(
            f"[{i}/{len(cases)}] {case.pattern}/{case.kernel} {case.grid}x{case.grid} ...",
            end=" ",
            flush=True,
        )
        r = runner.run(case)
        results.append(r)
        print(r.status if r.fwd_ms is None else f"fwd {r.fwd_ms:.1f} ms, {r.status}", flush=True)
    table = render(table_rows(results))
    grid = 128 if 128 in args.grids else args.grids[0]
    checks = summary(results, bmm, grid)
    pairs = []
    for g in args.grids if args.pair_rounds and not args.quick else ():
        for k in args.kernels:
            trained = {
                r.case.pattern
                for r in results
                if r.case.grid == g and r.case.kernel == k and r.bwd_ms is not None
            }
            if {"swin", "shifted_kv"} <= trained:
                print(f"paired swin / shifted_kv {k} {g}x{g} ...", flush=True)
                pairs.append(
                    paired_training(
                        runner,
                        g,
                        k,
                        args.dtype,
                        args.window_size,
                        not args.no_rope,
                        args.pair_rounds,
                    )
                )
    if pairs:
        checks += paired_lines(pairs)
    print()
    print(table)
    print()
    print("\n".join(checks))
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = "attention" if args.dtype == "fp32" else f"attention_{args.dtype}"
    csv_path = out_dir / f"{stem}.csv"
    write_csv(
        csv_path,
        [*results[0].row(), "bmm_gflops"],
        [{**r.row(), "bmm_gflops": _r(bmm.get(r.case.grid))} for r in results],
    )
    md = out_dir / f"{stem}.md"
    mem_kind = peak_memory_kind(device)
    md.write_text(
        f"# Attention benchmark ({args.dtype})\n\n"
        f"- device: {device_name(device)}\n- torch: {torch.__version__}\n"
        f"- date: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC\n"
        f"- command: `python -m benchmarks.attention {' '.join(argv or sys.argv[1:])}`\n"
        f"- shape: 1 image, {HEADS} heads x {HEAD_DIM}, window {args.window_size}, shifted "
        f"blocks, RoPE {not args.no_rope}; attention core only (qkv in, outputs out)\n"
        f"- timing: median of {reps} after warm-up (± half the spread); peak MB = "
        f"{mem_kind} of one forward\n"
        f"- window-shaped bmm GFLOP/s: "
        + ", ".join(f"{g}x{g}: {v:.1f}" for g, v in bmm.items())
        + "\n\n"
        + table
        + "\n\n```\n"
        + "\n".join(checks)
        + "\n```\n"
    )
    print(f"\nwrote {csv_path} and {md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
