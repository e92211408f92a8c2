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

This module parses the command line, prints the table and the checks and writes the CSV; the
case, its measurement and the paired rounds are in `benchmarks.attention_cases`.
"""

from __future__ import annotations

import argparse
import math
import sys

from benchmarks import _scaffold as scaffold
from benchmarks._scaffold import fmt, interval, render
from benchmarks._timing import matmul_gflops, memory_budget_bytes, peak_memory_kind
from benchmarks.attention_cases import (
    DTYPES,
    GENERIC,
    HEAD_DIM,
    HEADS,
    BenchCase,
    BenchResult,
    Runner,
    paired_training,
    round_or_none,
)
from hrsam.attention import list_attention, list_kernels

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
        bwd = fmt(r.bwd_ms) if r.bwd_ms is not None else ("n/a" if r.notes else "-")
        # The table keeps the first reason; the CSV has all of them.
        status = r.status.split("; ")[0] + (f" ({r.notes[0]})" if r.notes else "")
        rows.append(
            [
                c.pattern,
                c.kernel,
                f"{c.grid}x{c.grid}",
                fwd,
                bwd,
                fmt(r.fwd_bwd_ms),
                fmt(r.train_ms),
                fmt(r.gflops),
                fmt(r.peak_mb, 0),
                status,
            ]
        )
    return rows


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


def paired_lines(pairs: list[dict]) -> list[str]:
    """The target `shifted_kv` fwd+bwd no slower than `swin` (ratio >= 1.00), from the paired
    rounds, with the interval saying whether the two are separated at all."""
    lines = ["Training target, paired (interleaved rounds, ratio = swin / shifted_kv fwd+bwd):"]
    for r in pairs:
        sep = "" if r["lo"] > 1.0 or r["hi"] < 1.0 else ", not separated from 1.00"
        lines.append(
            f"  {'PASS' if r['ratio'] >= 1.0 else 'FAIL'} {r['grid']}x{r['grid']} {r['kernel']}: "
            f"{interval(r)}{sep} (swin {r['swin_ms']:.0f} ms, "
            f"shifted_kv {r['kv_ms']:.0f} ms, medians of {r['rounds']} rounds)"
        )
    return lines


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line; a bad grid, window, repetition count, round count or device is a
    one-line error (exit 2)."""
    p = scaffold.parser(
        "attention",
        "Attention pattern x kernel x token grid benchmark (forward, backward, useful GFLOP/s, "
        "peak memory), checked against the math kernel first.",
        "--grids 128 --patterns swin shifted_kv",
        "--dtype bf16 --device cuda",
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
    scaffold.add_options(p, "dtype", "device")
    p.add_argument("--window-size", type=int, default=16)
    p.add_argument("--no-rope", action="store_true", help="leave out RoPE on q and k")
    scaffold.add_options(p, "reps", "budget_gb", "max_case_s")
    p.add_argument(
        "--pair-rounds",
        type=int,
        default=6,
        help="interleaved swin / shifted_kv fwd+bwd rounds per grid and kernel (0: none)",
    )
    p.add_argument("--quick", action="store_true", help="one repetition, no backward budget")
    scaffold.add_options(p, "out")
    args = scaffold.parse(p, argv)
    for g in args.grids:
        if g < 1:
            p.error(f"--grids {g}: a grid side must be >= 1 token")
    if args.window_size < 1:
        p.error(f"--window-size {args.window_size}: must be >= 1")
    if args.reps < 1:
        p.error(f"--reps {args.reps}: must be >= 1")
    if args.pair_rounds < 0:
        p.error(f"--pair-rounds {args.pair_rounds}: must be >= 0 (0: no paired rounds)")
    return args


def window_bmm_rates(args: argparse.Namespace) -> dict[int, float]:
    """GFLOP/s of a window-shaped bmm at each grid (the rate a windowed kernel could reach),
    printed as measured."""
    bmm = {}
    for g in args.grids:
        n_win = math.ceil(g / args.window_size) ** 2
        s = args.window_size**2
        bmm[g] = matmul_gflops(n_win * HEADS, s, HEAD_DIM, s, args.device, DTYPES[args.dtype])
        print(
            f"window-shaped bmm at {g}x{g} ({n_win * HEADS} x {s}x{HEAD_DIM}x{s}): "
            f"{bmm[g]:.1f} GFLOP/s",
            flush=True,
        )
    return bmm


def build_cases(args: argparse.Namespace) -> list[BenchCase]:
    """Every grid x pattern x kernel of the command line, grid outermost."""
    return [
        BenchCase(p, k, g, args.dtype, args.window_size, True, not args.no_rope)
        for g in args.grids
        for p in args.patterns
        for k in args.kernels
    ]


def run_cases(runner: Runner, cases: list[BenchCase]) -> list[BenchResult]:
    """Checks and times each case in turn, with a progress line per case."""
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
    return results


def paired_rounds(
    runner: Runner, results: list[BenchResult], args: argparse.Namespace
) -> list[dict]:
    """`paired_training` at every grid and kernel where both ``swin`` and ``shifted_kv`` trained
    (none with ``--quick`` or ``--pair-rounds 0``)."""
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
    return pairs


def write_results(
    args: argparse.Namespace,
    argv: list[str] | None,
    results: list[BenchResult],
    bmm: dict[int, float],
    table: str,
    checks: list[str],
    reps: int,
) -> None:
    """``attention[_<dtype>].csv`` (every row, with the grid's bmm rate) and ``.md`` (the run's
    settings, the table and the checks) under ``--out`` or ``results/<device>``."""
    device = args.device
    settings = (
        f"- shape: 1 image, {HEADS} heads x {HEAD_DIM}, window {args.window_size}, shifted "
        f"blocks, RoPE {not args.no_rope}; attention core only (qkv in, outputs out)\n"
        f"- timing: median of {reps} after warm-up (± half the spread); peak MB = "
        f"{peak_memory_kind(device)} of one forward\n"
        f"- window-shaped bmm GFLOP/s: "
        + ", ".join(f"{g}x{g}: {v:.1f}" for g, v in bmm.items())
        + "\n"
    )
    title = f"Attention benchmark ({args.dtype})"
    scaffold.write_results(
        scaffold.results_dir(args.out, device),
        scaffold.stem("attention", args.dtype),
        [*results[0].row(), "bmm_gflops"],
        [{**r.row(), "bmm_gflops": round_or_none(bmm.get(r.case.grid))} for r in results],
        scaffold.markdown(title, "attention", argv, settings, table, checks, device),
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = args.device
    reps = 1 if args.quick else args.reps
    budget = args.budget_gb or memory_budget_bytes(device) / 2**30
    scaffold.banner(
        device,
        f"dtype {args.dtype}",
        f"heads {HEADS} x {HEAD_DIM}",
        f"window {args.window_size}",
        f"RoPE {not args.no_rope}",
    )
    bmm = window_bmm_rates(args)
    runner = Runner(device, budget, args.max_case_s, reps, max(bmm.values()))
    results = run_cases(runner, build_cases(args))
    table = render(table_rows(results), HEADER)
    grid = 128 if 128 in args.grids else args.grids[0]
    checks = summary(results, bmm, grid)
    pairs = paired_rounds(runner, results, args)
    if pairs:
        checks += paired_lines(pairs)
    scaffold.show(table, checks)
    write_results(args, argv, results, bmm, table, checks, reps)
    return 0


if __name__ == "__main__":
    sys.exit(main())
