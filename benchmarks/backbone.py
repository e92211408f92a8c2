"""Image-encoder latency, peak memory and FLOP efficiency against input size, SAM vs HRSAM.

    python -m benchmarks.backbone                                  # CPU default set, 512..4096
    python -m benchmarks.backbone --ts 1024 2048 --variants all    # every pattern x kernel
    python -m benchmarks.backbone --device cuda --dtype bf16
    python -m benchmarks.backbone --ts 1024 --variants hrsam_vit_b:shifted_kv:sdpa \
        hrsam_vit_b:shifted_kv:sdpa+compile                        # torch.compile vs eager

Variants are ``preset:attention:kernel`` rows (``sam_vit_b:global:math`` is SAM as the official code
computes it, materialized attention scores), or a bare preset name: the model as
``build_model(preset)`` builds it by default (kernel ``auto``, resolved for the device and dtype of
this run). The ``kernel`` column names the kernel every row ran. FLOPs come from
`hrsam.profiling.encoder_flops` (a pure count); achieved FLOP/s is compared with a dense matmul
measured in the same run. Cases estimated to exceed the memory budget are ``oom`` rows, cases
estimated to take longer than ``--max-case-s`` are ``skipped`` rows. The summary fits latency ~
tokens^k from 1024 to the largest size measured and checks the performance issue's CPU targets with
ratios from this run.
``official:sam_vit_b`` is the official ``segment-anything`` ViT-B image encoder (and its prompt
encoder and mask decoder for the ``dec ms`` column), built with ``img_size=ts`` because its
position embedding has a fixed size: a row of its own, in the same run, timed and measured
like ours. Before it is timed, our SAM encoder with its weights loaded is checked against its
output (``max err``); the summary gives our SAM's speed relative to it at every ts. The row is
``unsupported`` when ``segment-anything`` is not installed (it is in the test extra).
A ``+compile`` suffix runs the encoder under ``torch.compile`` (inductor, default mode): its first
call (the compilation) is timed separately, and the summary gives the speed-up over the same
variant in eager mode when both are in the run.

This module parses, measures, prints and writes; the variants and the models they build are in
`benchmarks.backbone_models`, the row and the checks read from a run's rows in
`benchmarks.backbone_rows`.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass

import torch

from benchmarks import _scaffold as scaffold
from benchmarks._scaffold import DTYPES, fmt, render
from benchmarks._timing import (
    PeakMemory,
    dense_matmul_gflops,
    memory_budget_bytes,
    peak_memory_kind,
    time_fn,
)
from benchmarks.backbone_models import (
    COMPILE,
    DEFAULT_VARIANTS,
    OFFICIAL,
    OfficialSam,
    all_variants,
    estimate_bytes,
    get_kernel_reasons,
    official_error,
    official_modeling,
    parse_variant,
    variant_preset,
)
from benchmarks.backbone_rows import Row, summary
from hrsam.attention import variant_support
from hrsam.models import build_model, get_preset
from hrsam.profiling import encoder_flops, sync

HEADER = [
    "variant",
    "kernel",
    "ts",
    "tokens",
    "enc ms",
    "dec ms",
    "GFLOP",
    "GFLOP/s",
    "% matmul",
    "peak MB",
    "max err",
    "status",
]


@dataclass(frozen=True)
class Run:
    """What every case of one run shares, settled once from the command line."""

    device: torch.device
    dtype: torch.dtype
    budget: float  # bytes
    matmul_rate: float  # GFLOP/s of the dense matmul measured at the start
    reps: int
    max_case_s: float
    interleave: bool
    modeling: object  # segment_anything.modeling, or None when it is not installed


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line, with ``--variants all`` expanded and every ts, variant and the device
    checked (a bad one: a one-line error, exit 2)."""
    p = scaffold.parser(
        "backbone",
        "Encoder latency, memory and FLOP efficiency vs ts: SAM vs HRSAM.",
        "--ts 1024 2048",
        "--variants all --ts 1024",
    )
    p.add_argument("--ts", type=int, nargs="+", default=[512, 1024, 2048, 3072, 4096])
    p.add_argument(
        "--variants",
        nargs="+",
        default=DEFAULT_VARIANTS,
        help="preset:attention:kernel rows, or 'all'",
    )
    scaffold.add_options(
        p, "device", "dtype", "reps", "budget_gb", "max_case_s", "out", max_case_s=240.0
    )
    p.add_argument(
        "--interleave",
        action="store_true",
        help="check every case first, then time the encoders in rounds of one call per case, so "
        "that a changing load on a shared machine hits every row alike",
    )
    args = scaffold.parse(p, argv)
    if args.variants == ["all"]:
        args.variants = all_variants()
    for ts in args.ts:
        if ts < 16 or ts % 16:
            p.error(f"--ts {ts}: must be a positive multiple of 16")
    try:
        for v in args.variants:
            preset, attention, kernel = parse_variant(v)
            get_preset(preset, kernel=kernel, **({"attention": attention} if attention else {}))
    except ValueError as e:
        p.error(str(e).splitlines()[0])
    return args


def settle(args: argparse.Namespace) -> Run:
    """The run's device, dtype, memory budget and dense matmul rate; prints them."""
    device = args.device
    dtype = DTYPES[args.dtype]
    budget = memory_budget_bytes(device) if args.budget_gb is None else args.budget_gb * 2**30
    matmul_rate = dense_matmul_gflops(device, dtype)
    scaffold.banner(
        device,
        args.dtype,
        f"dense 2048^3 matmul {matmul_rate:.1f} GFLOP/s",
        f"budget {budget / 2**30:.1f} GB",
    )
    modeling = official_modeling()
    return Run(
        device, dtype, budget, matmul_rate, args.reps, args.max_case_s, args.interleave, modeling
    )


def screen(run: Run, v: str, preset, ts: int, flops: float) -> tuple[str | None, int]:
    """The status of a case that is not timed (``unsupported``, ``oom`` or ``skipped``: from the
    kernel's support, the memory estimate and the time estimate) or None, and its repetitions."""
    device, dtype = run.device, run.dtype
    attention, kernel = preset.attention, preset.kernel
    reasons = (
        variant_support(attention, kernel, device, dtype)
        if preset.family != "sam"
        else get_kernel_reasons(kernel, device, dtype)
    )
    if v == OFFICIAL and run.modeling is None:
        reasons = ["segment-anything is not installed (pip install -e .[test])"]
    if reasons:
        return "unsupported: " + reasons[0], 0
    est = estimate_bytes(preset, attention, kernel, ts, torch.finfo(dtype).bits // 8)
    if est > run.budget:
        return f"oom: needs ~{est / 2**30:.1f} GB > budget {run.budget / 2**30:.1f} GB", 0
    est_s = flops / (0.3 * run.matmul_rate * 1e9)
    reps = run.reps if est_s * (run.reps + 1) < run.max_case_s else 1
    if est_s * (reps + 1) > run.max_case_s:
        return f"skipped: ~{est_s * 2:.0f} s > --max-case-s {run.max_case_s:.0f}", 0
    return None, reps


def measure_case(run: Run, row: Row, model, x: torch.Tensor, reps: int, flops: float) -> None:
    """One case on input ``x``: the compilation (``+compile``), peak memory, the check against the
    official output (official rows), the decoder time and, unless the run interleaves, the
    encoder time. A mismatch or out of memory ends it in ``row.status``."""
    v, device = row.variant, run.device
    try:
        with torch.no_grad():
            if v.endswith(COMPILE):  # compile outside the memory measurement
                start = time.perf_counter()
                model.encode(x)
                sync(device)
                row.compile_s = time.perf_counter() - start
            with PeakMemory(device) as mem:
                emb = model.encode(x)
            row.peak_mb = mem.mb
            if v == OFFICIAL:  # correctness first: ours with its weights, same input
                row.max_err = official_error(model, x, emb, row.ts)
                tol = 1e-4 if run.dtype == torch.float32 else 5e-2
                if not row.max_err <= tol:
                    row.status = f"mismatch: ours vs official {row.max_err:.2e} > {tol}"
                    return
            t = (
                None
                if run.interleave
                else time_fn(lambda m=model, x=x: m.encode(x), device, warmup=0, reps=reps)
            )
            pts = torch.tensor([[[row.ts / 2, row.ts / 2]]], device=device, dtype=run.dtype)
            lab = torch.ones(1, 1, dtype=torch.long, device=device)
            d = time_fn(
                lambda m=model, e=emb, p=pts, q=lab: m.decode(e, p, q),
                device,
                warmup=1,
                reps=5,
            )
    except torch.OutOfMemoryError:
        row.status = "oom"
        return
    row.dec_ms = d.median_ms
    if t is not None:
        row.enc_ms, row.enc_spread_ms = t.median_ms, t.spread_ms
        row.gflops = flops / (t.median_ms * 1e6)


def measure_variant(run: Run, v: str, sizes: list[int], rows: list[Row], pending: list) -> None:
    """Every ts of variant ``v``, appended to ``rows``; with ``--interleave`` each checked case is
    appended to ``pending`` as (row, model, input) for `time_in_rounds`. One model serves every
    ts, except the official one (its position embedding is sized by ``img_size``)."""
    device, dtype = run.device, run.dtype
    preset = variant_preset(v, device, dtype)
    model = None
    for ts in sizes:
        g = ts // 16
        tokens = g * g + sum((s // 16) ** 2 for s in preset.anchor_sizes)
        row = Row(v, ts, tokens, kernel="official" if v == OFFICIAL else preset.kernel)
        rows.append(row)
        print(f"{v} ts={ts} ...", end=" ", flush=True)
        flops = encoder_flops(preset, ts)
        row.gflop = flops / 1e9
        status, reps = screen(run, v, preset, ts, flops)
        if status:
            row.status = status
            print(row.status, flush=True)
            continue
        if v == OFFICIAL:  # its position embedding is sized by img_size: one per ts
            torch.manual_seed(0)
            model = OfficialSam(run.modeling, preset, ts).eval().to(device, dtype)
        elif model is None:
            torch.manual_seed(0)
            model = build_model(preset).eval().to(device, dtype)
            if v.endswith(COMPILE):
                model.image_encoder = torch.compile(model.image_encoder)
        x = torch.randn(1, 3, ts, ts, device=device, dtype=dtype)
        measure_case(run, row, model, x, reps, flops)
        if row.status != "ok":
            print(row.status, flush=True)
        elif run.interleave:
            pending.append((row, model, x))
            print(f"checked, peak {row.peak_mb:.0f} MB (timed in rounds below)", flush=True)
        else:
            print(f"enc {row.enc_ms:.0f} ms, peak {row.peak_mb:.0f} MB", flush=True)


def time_in_rounds(pending: list[tuple[Row, object, torch.Tensor]], device, reps: int) -> None:
    """``reps`` rounds of one encoder call per case (every case already ran once: its warm-up),
    so that all rows share the load of each round; median and half the spread as `time_fn`."""
    times: dict[int, list[float]] = {id(r): [] for r, _, _ in pending}
    for i in range(reps):
        for row, model, x in pending:
            with torch.no_grad():
                t = time_fn(lambda m=model, x=x: m.encode(x), device, warmup=0, reps=1)
            times[id(row)].append(t.median_ms)
            print(
                f"round {i + 1}/{reps} {row.variant} ts={row.ts}: {t.median_ms:.0f} ms", flush=True
            )
    for row, _, _ in pending:
        ts = sorted(times[id(row)])
        row.enc_ms = statistics.median(ts)
        if len(ts) >= 4:
            q = statistics.quantiles(ts, n=4)
            row.enc_spread_ms = (q[2] - q[0]) / 2
        else:
            row.enc_spread_ms = (ts[-1] - ts[0]) / 2
        row.gflops = row.gflop / (row.enc_ms * 1e-3)


def table_rows(rows: list[Row]) -> list[list[str]]:
    """The printed cells of each row, in `HEADER`'s order."""
    return [
        [
            r.variant,
            r.kernel,
            str(r.ts),
            str(r.tokens),
            "-" if r.enc_ms is None else f"{r.enc_ms:.0f} ± {r.enc_spread_ms:.0f}",
            fmt(r.dec_ms),
            fmt(r.gflop, 0),
            fmt(r.gflops),
            fmt(None if r.frac_matmul is None else 100 * r.frac_matmul, 0),
            fmt(r.peak_mb, 0),
            "-" if r.max_err is None else f"{r.max_err:.1e}",
            r.status,
        ]
        for r in rows
    ]


def write_results(
    args: argparse.Namespace,
    argv: list[str] | None,
    device: torch.device,
    rows: list[Row],
    matmul_rate: float,
    table: str,
    checks: list[str],
) -> None:
    """``backbone[_<dtype>].csv`` (every row, with the matmul rate) and ``.md`` (the run's
    settings, the table and the checks) under ``--out`` or ``results/<device>``."""
    settings = (
        f"- dense 2048^3 matmul: {matmul_rate:.1f} GFLOP/s (same run, best of start and end); "
        f"batch 1; enc ms = median (± half spread) after warm-up"
        + (", timed in interleaved rounds (one call per row per round)" if args.interleave else "")
        + "; dec ms = one click (prompt encoder + mask decoder); "
        f"peak MB = {peak_memory_kind(device)} of one encoder forward; GFLOP from "
        "`hrsam.profiling.encoder_flops`\n"
    )
    title = f"Image-encoder benchmark ({args.dtype})"
    scaffold.write_results(
        scaffold.results_dir(args.out, device),
        scaffold.stem("backbone", args.dtype),
        [*Row.__dataclass_fields__, "matmul_gflops"],
        [{**r.__dict__, "matmul_gflops": round(matmul_rate, 1)} for r in rows],
        scaffold.markdown(title, "backbone", argv, settings, table, checks, device),
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    run = settle(args)
    rows: list[Row] = []
    pending: list[tuple[Row, object, torch.Tensor]] = []  # --interleave: timed after the loop
    for v in args.variants:
        measure_variant(run, v, args.ts, rows, pending)
    if pending:
        time_in_rounds(pending, run.device, args.reps)
    # the machine's dense rate: the best of a measurement before and one after the cases
    matmul_rate = max(run.matmul_rate, dense_matmul_gflops(run.device, run.dtype))
    for r in rows:
        if r.gflops is not None:
            r.frac_matmul = r.gflops / matmul_rate
    print(f"dense matmul, best of start and end: {matmul_rate:.1f} GFLOP/s", flush=True)
    table = render(table_rows(rows), HEADER)
    checks = summary(rows, matmul_rate)
    scaffold.show(table, checks)
    write_results(args, argv, run.device, rows, matmul_rate, table, checks)
    return 0


if __name__ == "__main__":
    sys.exit(main())
