"""Selective-scan backends: tokens/s and peak memory against sequence length.

    python -m benchmarks.scan                          # L = 4096, 12288, 49152, 196608; C=768, N=32
    python -m benchmarks.scan --lengths 12288 --backends ref cpu

The shape is one cycle-scan module of HRSAM (spec A.9): C = 768 channels, N = 32 states, batch 1,
delta softplus with bias, D skip. L = 3 x tokens (three cycles): 12,288 at 1024 px, 196,608 at
4096 px. Every backend is checked against ``ref`` (at the case's L when ref runs there, else at
L = 512) before it is timed. The last lines compare with the cycle-scan issue's targets at
L = 12,288 using ratios from this run.

Tolerance against ``ref`` is each backend's own (``ScanBackend.tolerance``): max |y - ref| <=
rtol * max |ref| + atol, with (1e-5, 0) for ``cpu`` and ``chunked`` and mamba-ssm's own test
tolerance (rtol 6e-4, atol 2e-3) for ``mamba_ssm``, which is built with fast math.
"""

from __future__ import annotations

import argparse
import sys

import torch

from benchmarks import _scaffold as scaffold
from benchmarks._scaffold import fmt, render
from benchmarks._timing import PeakMemory, memory_budget_bytes, peak_memory_kind, time_fn
from hrsam.ssm import get_scan, list_scans, selective_scan

HEADER = [
    "backend",
    "L",
    "fwd ms",
    "fwd+bwd ms",
    "Mtokens/s (fwd)",
    "peak MB (fwd)",
    "peak MB (fwd+bwd)",
    "status",
]


def make_inputs(length: int, channels: int, state: int, device: torch.device, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(1, channels, length, generator=g)
    delta = torch.randn(1, channels, length, generator=g) - 2.0
    A = -torch.exp(torch.randn(channels, state, generator=g) * 0.5)
    B = torch.randn(1, state, length, generator=g)
    C = torch.randn(1, state, length, generator=g)
    D = torch.ones(channels)
    bias = torch.randn(channels, generator=g) * 0.1
    return [t.to(device) for t in (u, delta, A, B, C, D, bias)]


def run_scan(backend: str, args, grad: bool):
    ts = [t.detach().requires_grad_(grad) for t in args]
    y = selective_scan(*ts, delta_softplus=True, backend=backend)
    if grad:
        y.backward(torch.ones_like(y))
    return y


def allowed_error(backend: str, ref: torch.Tensor) -> float:
    """The largest max-abs error relative to max |ref| that ``backend``'s tolerance admits."""
    rtol, atol = get_scan(backend).tolerance
    return rtol + atol / max(ref.abs().max().item(), 1e-30)


def estimate_s(
    backend: str, length: int, channels: int, grad: bool, device_type: str = "cpu"
) -> float:
    """Rough seconds for one call on a 2-core CPU (ref: ~0.25 ms per step at C=768, N=32;
    chunked: ~0.5 ms, its log-depth scan moves more memory than a CPU has bandwidth for)."""
    if backend == "chunked" and device_type == "cpu":
        return length * 0.5e-3 * channels / 768 * (4.0 if grad else 1.0)
    if backend != "ref":
        return 0.0
    per_step = 0.25e-3 * channels / 768
    return length * per_step * (4.0 if grad else 1.0)


def ref_backward_bytes(length: int, channels: int, state: int) -> float:
    """ref's autograd keeps about four (B, D, N) tensors per step for the backward."""
    return 4.0 * length * channels * state * 4


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line; a length below 1 or a bad device is a one-line error (exit 2)."""
    p = scaffold.parser(
        "scan",
        "Selective-scan backends: time, tokens/s and peak memory vs sequence length.",
        "--lengths 12288 --backends ref cpu",
    )
    p.add_argument("--lengths", type=int, nargs="+", default=[4096, 12288, 49152, 196608])
    p.add_argument("--backends", nargs="+", choices=list_scans(), default=list_scans())
    p.add_argument("--channels", type=int, default=768)
    p.add_argument("--state", type=int, default=32)
    scaffold.add_options(p, "device", "reps", "max_case_s", "out")
    args = scaffold.parse(p, argv)
    for length in args.lengths:
        if length < 1:
            p.error(f"--lengths {length}: must be >= 1")
    return args


def screen(backend: str, length: int, args: argparse.Namespace, device: torch.device) -> str | None:
    """The status of a case that is not timed (``unsupported`` or ``skipped``), else None."""
    reasons = get_scan(backend).support(device, backward=True)
    if reasons:
        return "unsupported: " + reasons[0]
    est = estimate_s(backend, length, args.channels, False, device.type)
    if est > args.max_case_s:
        return f"skipped: ~{est:.0f} s > --max-case-s {args.max_case_s:.0f}"
    return None


def time_forward(
    backend: str,
    inputs: list[torch.Tensor],
    check: list[torch.Tensor],
    ref_small: torch.Tensor,
    ref_out: torch.Tensor | None,
    row: dict,
    args: argparse.Namespace,
    device: torch.device,
) -> torch.Tensor | None:
    """Checks ``backend`` against ``ref`` at L = 512 (``check``, ``ref_small``) and at this L
    (``ref_out``, when ref ran here), measures its peak memory and times its forward into
    ``row``. Returns its output at this L, or None after a mismatch (``row["status"]``)."""
    backend_is_ref = backend == "ref"
    with torch.no_grad():
        small = selective_scan(*check, delta_softplus=True, backend=backend).cpu()
        err = ((small - ref_small).abs().max() / ref_small.abs().max()).item()
        if err > allowed_error(backend, ref_small):
            row["status"] = f"mismatch vs ref at L=512: {err:.1e}"
            return None
        # The profiler that measures CPU peak memory records every op: far too slow
        # for ref's per-step loop, so ref's memory is not measured.
        if backend_is_ref:
            out = run_scan(backend, inputs, grad=False)
        else:
            with PeakMemory(device) as mem:
                out = run_scan(backend, inputs, grad=False)
            row["peak_fwd_mb"] = mem.mb
        if not backend_is_ref and ref_out is not None:
            err = ((out - ref_out).abs().max() / ref_out.abs().max()).item()
            row["max_rel_err_vs_ref"] = err
            if err > allowed_error(backend, ref_out):
                row["status"] = f"mismatch vs ref: {err:.1e}"
                return None
        t = time_fn(
            lambda b=backend, x=inputs: run_scan(b, x, False),
            device,
            warmup=0 if backend_is_ref else 1,
            reps=1 if backend_is_ref else args.reps,
        )
    row["fwd_ms"] = t.median_ms
    row["mtok_s"] = row["L"] / t.median_ms / 1e3
    return out


def time_backward(
    backend: str,
    inputs: list[torch.Tensor],
    row: dict,
    args: argparse.Namespace,
    device: torch.device,
) -> None:
    """Peak memory and time of forward + backward into ``row``, and its final status; skipped
    (said in the status) when too slow, or for ref when its autograd would not fit in memory."""
    length = row["L"]
    budget = memory_budget_bytes(torch.device("cpu"))
    if estimate_s(backend, length, args.channels, True, device.type) > args.max_case_s:
        row["status"] = "ok (fwd+bwd skipped: too slow)"
    elif (
        backend == "ref"
        and (need := ref_backward_bytes(length, args.channels, args.state) / 2**30) > budget / 2**30
    ):
        row["status"] = f"ok (fwd+bwd skipped: autograd needs ~{need:.0f} GB)"
    else:
        if backend != "ref":
            with PeakMemory(device) as mem:
                run_scan(backend, inputs, grad=True)
            row["peak_bwd_mb"] = mem.mb
        tb = time_fn(
            lambda b=backend, x=inputs: run_scan(b, x, True),
            device,
            warmup=0,
            reps=1 if backend == "ref" else args.reps,
        )
        row["fwdbwd_ms"] = tb.median_ms
        row["status"] = "ok"


def measure(args: argparse.Namespace, device: torch.device) -> list[dict]:
    """One row per length x backend, ref first at each length so that the others are checked
    against its output there; a row without ``fwd_ms`` was not timed (see its status)."""
    rows = []
    check = make_inputs(512, args.channels, args.state, device)
    with torch.no_grad():
        ref_small = selective_scan(*[t.cpu() for t in check], delta_softplus=True, backend="ref")
    for length in args.lengths:
        inputs = make_inputs(length, args.channels, args.state, device)
        ref_out = None
        for backend in sorted(args.backends, key=lambda name: name != "ref"):
            print(f"{backend} L={length} ...", end=" ", flush=True)
            row = {"backend": backend, "L": length}
            rows.append(row)
            status = screen(backend, length, args, device)
            if status:
                row["status"] = status
                print(row["status"], flush=True)
                continue
            out = time_forward(backend, inputs, check, ref_small, ref_out, row, args, device)
            if out is None:
                continue
            if backend == "ref":
                ref_out = out
            time_backward(backend, inputs, row, args, device)
            print(f"fwd {row['fwd_ms']:.1f} ms, {row['status']}", flush=True)
    return rows


def results_table(rows: list[dict]) -> str:
    """The printed table, one line per row in `HEADER`'s order."""
    return render(
        [
            [
                r["backend"],
                str(r["L"]),
                fmt(r.get("fwd_ms")),
                fmt(r.get("fwdbwd_ms")),
                fmt(r.get("mtok_s"), 3),
                fmt(r.get("peak_fwd_mb"), 0),
                fmt(r.get("peak_bwd_mb"), 0),
                r["status"],
            ]
            for r in rows
        ],
        HEADER,
    )


def target_checks(rows: list[dict], channels: int, state: int) -> list[str]:
    """The cycle-scan issue's targets at L = 12,288: ``cpu`` against ``ref`` forward and forward
    + backward, and a peak below one (L, C, N) float32 tensor."""
    results = {(r["backend"], r["L"]): r for r in rows if "fwd_ms" in r}
    checks = ["Targets at L = 12288 (ratios from this run):"]
    ref, fast = results.get(("ref", 12288)), results.get(("cpu", 12288))
    if ref and fast:
        sf = ref["fwd_ms"] / fast["fwd_ms"]
        checks.append(
            f"  {'PASS' if sf >= 10 else 'FAIL'} cpu forward {sf:.1f}x faster than "
            f"ref (target >= 10x)"
        )
        if "fwdbwd_ms" in ref and "fwdbwd_ms" in fast:
            sb = ref["fwdbwd_ms"] / fast["fwdbwd_ms"]
            checks.append(
                f"  {'PASS' if sb >= 5 else 'FAIL'} cpu forward+backward {sb:.1f}x "
                f"faster than ref (target >= 5x)"
            )
        lcn_mb = 12288 * channels * state * 4 / 2**20
        pk = fast.get("peak_bwd_mb") or fast["peak_fwd_mb"]
        checks.append(
            f"  {'PASS' if pk < lcn_mb else 'FAIL'} cpu peak {pk:.0f} MB < one "
            f"(L, C, N) float32 tensor ({lcn_mb:.0f} MB): nothing of that size is built"
        )
    else:
        checks.append("  not measured (need ref and cpu at L = 12288)")
    return checks


def write_results(
    args: argparse.Namespace,
    argv: list[str] | None,
    device: torch.device,
    rows: list[dict],
    table: str,
    checks: list[str],
) -> None:
    """``scan.csv`` (every row) and ``scan.md`` (the run's settings, the table and the checks)
    under ``--out`` or ``results/<device>``."""
    fields = [
        "backend",
        "L",
        "fwd_ms",
        "fwdbwd_ms",
        "mtok_s",
        "peak_fwd_mb",
        "peak_bwd_mb",
        "max_rel_err_vs_ref",
        "status",
    ]
    settings = (
        f"- shape: batch 1, C={args.channels}, N={args.state}, delta softplus + bias, D skip; "
        f"fwd+bwd = forward and backward of all inputs; peak = {peak_memory_kind(device)}\n"
    )
    md = scaffold.markdown(
        "Selective-scan benchmark", "scan", argv, settings, table, checks, device
    )
    scaffold.write_results(scaffold.results_dir(args.out, device), "scan", fields, rows, md)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = args.device
    scaffold.banner(device, f"C={args.channels} N={args.state} batch 1")
    rows = measure(args, device)
    table = results_table(rows)
    checks = target_checks(rows, args.channels, args.state)
    scaffold.show(table, checks)
    write_results(args, argv, device, rows, table, checks)
    return 0


if __name__ == "__main__":
    sys.exit(main())
