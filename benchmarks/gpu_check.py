"""Does paper scale work on this GPU? ``python -m benchmarks.gpu_check`` (``make gpu-check``).

One script, under 5 minutes on a GPU (issue 18):

1. the gpu-marked tests (``pytest -m gpu``);
2. every attention pattern x kernel in bf16, forward and backward, against fp32 ``math``: the
   error may be at most 2x that of ``math`` itself in bf16, plus 1e-3;
3. every scan backend against ``ref`` (fp32) at its own tolerance (``ScanBackend.tolerance``);
4. the encoders (SAM ViT-B vs HRSAM ViT-B, random weights, bf16) at ts 1024 / 2048 / 4096:
   latency (median of 3 after a warm-up) and peak memory; out-of-memory is a result.

Tables go to ``benchmarks/results/<gpu name>/gpu_check.{md,csv}``. On a machine without CUDA it
says so, runs the CPU-runnable parts at tiny size (tiny presets, small grids) and exits 0;
its tables then go to ``outputs/gpu_check/cpu/`` (not the recorded CPU results).
"""

from __future__ import annotations

import argparse
import datetime as dt
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from benchmarks import _scaffold as scaffold
from benchmarks._scaffold import ROOT, render
from benchmarks._timing import PeakMemory, device_name, time_fn, write_csv
from hrsam import info, names
from hrsam.attention import Attention, list_attention, list_kernels, variant_support
from hrsam.ssm.scan import get_scan, list_scans, selective_scan

HEADS, HEAD_DIM = 4, 32


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).abs().max() / b.float().abs().max().clamp_min(1e-6)).item()


def gpu_tests(timeout_s: float) -> dict:
    """Runs ``pytest -m gpu``; its summary line and exit code."""
    start = time.perf_counter()
    try:
        p = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
        last = (p.stdout.strip().splitlines() or ["(no output)"])[-1]
        status = "ok" if p.returncode == 0 else f"failed (exit {p.returncode})"
        failures = [ln for ln in p.stdout.splitlines() if ln.startswith("FAILED")]
    except subprocess.TimeoutExpired:
        last, status, failures = f"timed out after {timeout_s:.0f} s", "timeout", []
    return {
        "status": status,
        "summary": last,
        "failures": failures,
        "s": time.perf_counter() - start,
    }


def _attention_case(pattern, kernel, grid, ws, device, dtype, backward, seed=0):
    torch.manual_seed(seed)
    m = Attention(HEADS * HEAD_DIM, HEADS, attention=pattern, kernel=kernel, window_size=ws)
    m.pattern.shifted = True
    with torch.no_grad():
        m.padding.normal_()
    gen = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(1, grid * grid, HEADS * HEAD_DIM, generator=gen)
    gy = torch.randn(1, grid * grid, HEADS * HEAD_DIM, generator=gen)
    m = m.to(device, dtype)
    xd = x.to(device, dtype).requires_grad_(backward)
    with torch.set_grad_enabled(backward):
        out = m(xd, [(grid, grid)])
        grad = None
        if backward:
            (out * gy.to(device, dtype)).sum().backward()
            grad = xd.grad
    return out.detach(), grad


def check_attention(device: torch.device, grid: int, ws: int) -> list[dict]:
    """Every pattern x kernel in bf16 (forward, and backward where the kernel has one) against
    fp32 math; allowed error: 2x that of math in bf16, plus 1e-3."""
    backward = True
    rows = []
    for pattern in list_attention():
        ref_out, ref_grad = _attention_case(
            pattern, "math", grid, ws, device, torch.float32, backward
        )
        half_out, half_grad = _attention_case(
            pattern, "math", grid, ws, device, torch.bfloat16, backward
        )
        base_fwd = _rel(half_out, ref_out)
        base_bwd = _rel(half_grad, ref_grad) if backward else None
        for kernel in list_kernels():
            row = {"pattern": pattern, "kernel": kernel, "grid": grid, "dtype": "bf16"}
            reasons = variant_support(pattern, kernel, device, torch.bfloat16)
            if reasons:
                row["status"] = "unsupported: " + "; ".join(reasons)
                rows.append(row)
                continue
            bwd = backward and not variant_support(
                pattern, kernel, device, torch.bfloat16, backward=True
            )
            try:
                out, grad = _attention_case(pattern, kernel, grid, ws, device, torch.bfloat16, bwd)
            except Exception as e:  # a crash is a finding, not the end of the check
                row["status"] = f"error: {type(e).__name__}: {str(e).splitlines()[0][:120]}"
                rows.append(row)
                continue
            row["err_fwd"] = _rel(out, ref_out)
            row["allowed_fwd"] = 2 * base_fwd + 1e-3
            ok = row["err_fwd"] <= row["allowed_fwd"]
            if bwd:
                row["err_bwd"] = _rel(grad, ref_grad)
                row["allowed_bwd"] = 2 * base_bwd + 1e-3
                ok = ok and row["err_bwd"] <= row["allowed_bwd"]
            row["status"] = ("ok" if ok else "MISMATCH") + ("" if bwd else " (forward only)")
            rows.append(row)
    return rows


def check_scans(device: torch.device, length: int, channels: int, state: int) -> list[dict]:
    """Every scan backend against ``ref`` (fp32, CPU), forward and backward."""
    gen = torch.Generator().manual_seed(0)
    u = torch.randn(1, channels, length, generator=gen)
    delta = torch.randn(1, channels, length, generator=gen)
    A = -torch.exp(torch.randn(channels, state, generator=gen))
    B, C = (torch.randn(1, state, length, generator=gen) for _ in range(2))
    D, bias = torch.randn(channels, generator=gen), torch.randn(channels, generator=gen) * 0.5
    gy = torch.randn(1, channels, length, generator=gen)

    def run(backend, dev):
        ts = [t.to(dev).requires_grad_() for t in (u, delta, A, B, C, D, bias)]
        start = time.perf_counter()
        y = selective_scan(*ts, delta_softplus=True, backend=backend)
        (y * gy.to(dev)).sum().backward()
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        return y.detach().cpu(), [t.grad.cpu() for t in ts], time.perf_counter() - start

    ref_y, ref_g, _ = run("ref", torch.device("cpu"))
    rows = []
    for backend in list_scans():
        row = {"backend": backend, "L": length, "C": channels, "N": state}
        reasons = get_scan(backend).support(device, backward=True)
        if reasons:
            row["status"] = "unsupported: " + "; ".join(reasons)
            rows.append(row)
            continue
        if backend == "ref" and device.type == "cuda":
            row["status"] = "skipped: ref is the ground truth (CPU); one step per launch on CUDA"
            rows.append(row)
            continue
        rtol, atol = get_scan(backend).tolerance
        try:
            y, g, s = run(backend, device)
        except Exception as e:
            row["status"] = f"error: {type(e).__name__}: {str(e).splitlines()[0][:120]}"
            rows.append(row)
            continue
        row["err_fwd"] = _rel(y, ref_y)
        row["err_bwd"] = max(_rel(a, b) for a, b in zip(g, ref_g, strict=True))
        allowed = max(rtol + atol / ref_y.abs().max().item(), 1e-4 if device.type == "cuda" else 0)
        row["allowed"] = allowed
        row["fwdbwd_ms"] = s * 1e3
        ok = row["err_fwd"] <= allowed and row["err_bwd"] <= max(allowed, 1e-4)
        row["status"] = "ok" if ok else "MISMATCH"
        rows.append(row)
    return rows


def check_encoders(
    device: torch.device, presets: Sequence[str], sizes: Sequence[int]
) -> list[dict]:
    """Encoder latency and peak memory in bf16 (autocast), random weights."""
    from hrsam.models import build_model
    from hrsam.precision import autocast

    rows = []
    for preset in presets:
        try:  # the default build for this device in bf16: kernel auto, named in the row
            model = build_model(preset, device=device, dtype=torch.bfloat16).to(device).eval()
        except Exception as e:
            rows.append({"preset": preset, "status": f"error: {type(e).__name__}: {e}"})
            continue
        for ts in sizes:
            row = {"preset": preset, "kernel": model.preset.kernel, "ts": ts, "precision": "bf16"}
            x = torch.randn(1, 3, ts, ts, device=device)

            def encode(m=model, x=x):
                with torch.no_grad(), autocast(device, "bf16"):
                    return m.encode(x)

            try:
                t = time_fn(encode, device, warmup=1, reps=3)
                with PeakMemory(device) as mem:
                    encode()
                row.update(
                    {
                        names.ENCODER_MS: t.median_ms,
                        "spread_ms": t.spread_ms,
                        names.PEAK_MEM_MB: mem.mb,
                    }
                )
                row["status"] = "ok"
            except torch.OutOfMemoryError:
                row["status"] = "out of memory"
            except Exception as e:
                row["status"] = f"error: {type(e).__name__}: {str(e).splitlines()[0][:120]}"
            finally:
                if device.type == "cuda":
                    torch.cuda.empty_cache()
            rows.append(row)
        del model
    return rows


def _f(x, nd=3) -> str:
    if x is None:
        return "-"
    return f"{x:.1e}" if isinstance(x, float) and abs(x) < 1e-2 and x else f"{x:.{nd}f}"


@dataclass(frozen=True)
class Plan:
    """The sizes one gpu-check runs at, and what it leaves out."""

    grid: int  # attention: token grid side
    ws: int  # attention: window size
    scan_shape: tuple[int, int, int]  # L, C, N
    presets: tuple[str, ...]
    sizes: tuple[int, ...]  # encoder ts
    skipped: tuple[str, ...] = ()


PAPER_SCALE = Plan(64, 16, (4096, 64, 16), ("sam_vit_b", "hrsam_vit_b"), (1024, 2048, 4096))
TINY_SCALE = Plan(
    12,
    4,
    (256, 8, 4),
    ("sam_tiny", "hrsam_tiny"),
    (128,),
    (
        "gpu-marked tests",
        "xformers / flash kernels",
        "mamba_ssm scan",
        "ViT-B encoders at ts 1024 / 2048 / 4096 (tiny presets at ts 128 instead)",
    ),
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line: where to write and how long the gpu-marked tests may take."""
    p = scaffold.parser("gpu_check", __doc__.split("\n\n")[0])
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="results folder (default: benchmarks/results/<gpu>, outputs/gpu_check/cpu without "
        "CUDA)",
    )
    p.add_argument("--tests-timeout-s", type=float, default=150.0)
    return scaffold.parse(p, argv)


def plan_and_tests(cuda: bool, timeout_s: float) -> tuple[Plan, dict]:
    """On CUDA: paper scale, after running the gpu-marked tests. Without: the tiny plan, saying
    what it skips (the tests among them)."""
    if cuda:
        print("gpu-marked tests ...", flush=True)
        tests = gpu_tests(timeout_s)
        print(f"  {tests['status']}: {tests['summary']}", flush=True)
        return PAPER_SCALE, tests
    print(
        "no CUDA GPU on this machine: skipping the gpu-marked tests, the CUDA kernels "
        "(xformers, flash) and CUDA scans (mamba_ssm), the backward of FlexAttention "
        "(forward only on CPU), and the ViT-B encoders at ts 1024 / 2048 / 4096; running the "
        "CPU-runnable parts at tiny size",
        flush=True,
    )
    return TINY_SCALE, {"status": "skipped: no CUDA GPU", "summary": "", "failures": [], "s": 0.0}


def run_checks(device: torch.device, plan: Plan) -> dict[str, list[dict]]:
    """The attention, scan and encoder checks at the plan's sizes: their rows by CSV name."""
    print(
        f"attention: every pattern x kernel in bf16 vs fp32 math (grid {plan.grid}) ...",
        flush=True,
    )
    attn = check_attention(device, plan.grid, plan.ws)
    print("scan backends vs ref ...", flush=True)
    scans = check_scans(device, *plan.scan_shape)
    print(f"encoders at ts {', '.join(map(str, plan.sizes))} ...", flush=True)
    enc = check_encoders(device, plan.presets, plan.sizes)
    return {"attention": attn, "scan": scans, "encoders": enc}


def render_tables(checks: dict[str, list[dict]]) -> list[str]:
    """The attention, scan and encoder tables, in that order."""
    attn_table = render(
        [
            [r["pattern"], r["kernel"], _f(r.get("err_fwd")), _f(r.get("allowed_fwd")),
             _f(r.get("err_bwd")), _f(r.get("allowed_bwd")), r["status"]]
            for r in checks["attention"]
        ],
        ["pattern", "kernel", "fwd err", "allowed", "bwd err", "allowed", "status"],
    )  # fmt: skip
    scan_table = render(
        [
            [r["backend"], str(r["L"]), _f(r.get("err_fwd")), _f(r.get("err_bwd")),
             _f(r.get("allowed")), _f(r.get("fwdbwd_ms"), 1), r["status"]]
            for r in checks["scan"]
        ],
        ["backend", "L", "fwd err", "bwd err", "allowed", "fwd+bwd ms", "status"],
    )  # fmt: skip
    enc_table = render(
        [
            [r["preset"], r.get("kernel", "-"), str(r.get("ts", "-")), r.get("precision", "-"),
             _f(r.get(names.ENCODER_MS), 1), _f(r.get(names.PEAK_MEM_MB), 0), r["status"]]
            for r in checks["encoders"]
        ],
        ["preset", "kernel", "ts", "precision", "encoder ms", "peak MB", "status"],
    )  # fmt: skip
    return [attn_table, scan_table, enc_table]


def write_report(
    out: Path,
    device: torch.device,
    env: str,
    elapsed: float,
    tests: dict,
    plan: Plan,
    checks: dict[str, list[dict]],
    tables: list[str],
) -> None:
    """``gpu_check.md`` (environment, tests, what was skipped, the three tables) and one
    ``gpu_check_<check>.csv`` per check under ``out``."""
    attn_table, scan_table, enc_table = tables
    length, channels, state = plan.scan_shape
    report = (
        f"# GPU check\n\n- device: {device_name(device)}\n- environment: {env}\n"
        f"- date: {dt.date.today()}\n- wall: {elapsed:.0f} s\n"
        f"- gpu-marked tests: {tests['status']} {tests['summary']}\n"
        + "".join(f"  - {f}\n" for f in tests["failures"])
        + ("- skipped: " + "; ".join(plan.skipped) + "\n" if plan.skipped else "")
        + f"\n## Attention, bf16 vs fp32 math (grid {plan.grid}, window {plan.ws})\n\n"
        f"{attn_table}\n"
        + f"\n## Scan backends vs ref (L={length}, C={channels}, N={state})\n\n{scan_table}\n"
        + f"\n## Encoders (random weights, bf16 autocast, kernel auto)\n\n{enc_table}\n"
    )
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_check.md").write_text(report)
    for name, rows in checks.items():
        fields = list(dict.fromkeys(k for r in rows for k in r))
        write_csv(out / f"gpu_check_{name}.csv", fields, rows)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    out = args.out or (
        scaffold.results_dir(None, device) if cuda else ROOT / "outputs/gpu_check/cpu"
    )
    start = time.perf_counter()
    env = info.summary(device)
    print(f"gpu-check on {device_name(device)}\n{env}", flush=True)
    plan, tests = plan_and_tests(cuda, args.tests_timeout_s)
    checks = run_checks(device, plan)
    elapsed = time.perf_counter() - start
    tables = render_tables(checks)
    bad = [
        r for rows in checks.values() for r in rows if r["status"].startswith(("MISMATCH", "error"))
    ]
    write_report(out, device, env, elapsed, tests, plan, checks, tables)
    print(*tables, sep="\n\n")
    print(f"\nwrote {out / 'gpu_check.md'} ({elapsed:.0f} s)")
    if plan.skipped:
        print("skipped here: " + "; ".join(plan.skipped))
    if bad or tests["status"].startswith(("failed", "timeout")):
        print(f"gpu-check found {len(bad)} mismatches or errors", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
