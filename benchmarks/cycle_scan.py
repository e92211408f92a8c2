"""One cycle-scan module's mix, fused against the R-fold repeated scan, in training and inference.

    python -m benchmarks.cycle_scan                          # tiny (C 96, N 8), ViT-B (C 768, N 32)
    python -m benchmarks.cycle_scan --baseline-rev 9a87a64   # plus an earlier revision's kernel

A case is one `hrsam.ssm.cycle_scan.CycleScan` (R = 3, batch 1, random weights, seed 0) on the
token grid of a preset at a ts: ``tiny`` = C 96, N 8 at ts 512 (1,024 tokens), ``vit_b`` = C 768,
N 32 at ts 1024 (4,096 tokens), ``vit_b_2048`` the same at ts 2048. Every path computes the mix
from the same gated tokens and projections (``ssm_proj`` is outside the timing):

- ``fused-16``, ``fused-32``: `hrsam.ssm.cpu_scan.fused_cycle_scan` with 16 or 32 channels per
  tile (``lanes(N)`` picks one; the row it picks is marked);
- ``repeated``: `CycleScan.repeated_scan`, u, dt, B and C repeated R times and the per-channel
  ``cpu`` selective scan (the training path before the fused kernel);
- ``rev:<REV>`` (inference only, with ``--baseline-rev``): the fused inference kernel of an
  earlier revision, ``hrsam_cycle_scan_infer`` (32-channel tiles with states innermost, the
  layout before channels went into the lanes), built from ``git show
  REV:hrsam/ssm/csrc/selective_scan.c`` with the same flags.

``train`` times forward + backward (gradients to the tokens, the projections and the module's
parameters), ``infer`` the forward under ``no_grad``. Each round runs every path once, the order
rotating from round to round; each path is compared with the default fused path round by round:
the geometric mean of the ratios and a 95% bootstrap interval over the rounds
(`benchmarks._timing.ratio_interval`). Every path is checked against the fused output before it
is timed.
"""

from __future__ import annotations

import argparse
import ctypes
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from benchmarks import _scaffold as scaffold
from benchmarks._scaffold import ROOT, interval, render
from benchmarks._timing import median_ms, paired_ratio
from hrsam.ssm import cpu_scan
from hrsam.ssm.cycle_scan import CycleScan

CASES = {"tiny": (96, 8, 512), "vit_b": (768, 32, 1024), "vit_b_2048": (768, 32, 2048)}
MODES = ("train", "infer")


def build_revision(rev: str) -> ctypes.CDLL:
    """The C kernel of an earlier revision, compiled as `hrsam.ssm.cpu_scan.library` compiles
    the current one; raises ValueError naming the revision when it cannot be used."""
    shown = subprocess.run(
        ["git", "show", f"{rev}:hrsam/ssm/csrc/selective_scan.c"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    if shown.returncode != 0:
        raise ValueError(f"--baseline-rev {rev}: git has no selective_scan.c at that revision")
    cc = cpu_scan.compiler()
    if cc is None:
        raise ValueError("--baseline-rev needs a C compiler (set CC or install gcc)")
    tmp = Path(tempfile.mkdtemp(prefix="hrsam-rev-"))
    (tmp / "scan.c").write_text(shown.stdout)
    built = subprocess.run(
        [cc, *cpu_scan.FLAGS, str(tmp / "scan.c"), "-o", str(tmp / "scan.so"), "-lm"],
        capture_output=True,
        text=True,
    )
    if built.returncode != 0:
        shutil.rmtree(tmp)
        raise ValueError(f"--baseline-rev {rev}: its kernel does not build here")
    lib = ctypes.CDLL(str(tmp / "scan.so"))
    shutil.rmtree(tmp)  # the loaded library stays mapped
    if not hasattr(lib, "hrsam_cycle_scan_infer"):
        raise ValueError(
            f"--baseline-rev {rev}: no hrsam_cycle_scan_infer in that revision "
            "(it exists from the fused inference kernel up to the lanes layout, e.g. 9a87a64)"
        )
    ptr, i32, i64 = ctypes.c_void_p, ctypes.c_int, ctypes.c_long
    lib.hrsam_cycle_scan_infer.argtypes = (
        [i32] * 6 + [ptr, i64, ptr, i64, ptr, ptr, i64] + [ptr] * 5
    )
    lib.hrsam_cycle_scan_infer.restype = None
    return lib


class Case:
    """A module and its inputs; ``run(path, mode)`` computes the mix (and its backward)."""

    def __init__(
        self, channels: int, state: int, ts: int, rev: ctypes.CDLL | None = None, seed: int = 0
    ) -> None:
        torch.manual_seed(seed)
        self.module = CycleScan(channels, state, 3, scan="cpu")
        with torch.no_grad():
            self.module.gamma.normal_()
            tokens = torch.randn(1, (ts // 16) ** 2, channels)
            self.x = self.module.in_proj(self.module.in_norm(tokens)).chunk(2, -1)[0]
            self.proj = self.module.ssm_proj(self.x)
        self.grad = torch.randn(self.x.shape)
        self.default = f"fused-{cpu_scan.lanes(state)}"
        self.rev = rev  # an earlier revision's kernel (`build_revision`), timed for inference

    def mix(self, path: str, x: torch.Tensor, proj: torch.Tensor) -> torch.Tensor:
        m = self.module
        if path.startswith("fused-"):
            A = -torch.exp(m.As_log)
            w = int(path.split("-")[1])
            return cpu_scan.fused_cycle_scan(x, proj, A, m.Ds, m.ssm_proj_bias, m.gamma, w)
        if path == "repeated":
            return m.repeated_scan(x, proj)
        return self._revision(x, proj)

    def _revision(self, x: torch.Tensor, proj: torch.Tensor) -> torch.Tensor:
        m, (b, length, c), n = self.module, x.shape, self.module.state_dim
        A = (-torch.exp(m.As_log)).detach().contiguous()
        gamma = m.gamma.detach().reshape(c, -1).contiguous()
        out = x.new_empty(b, length, c)
        ptrs = [ctypes.c_void_p(t.data_ptr()) for t in (A, m.Ds, m.ssm_proj_bias, gamma, out)]
        self.rev.hrsam_cycle_scan_infer(
            b, c, length, n, gamma.shape[1], torch.get_num_threads(),
            *cpu_scan.row_args(x, proj, n), *ptrs,
        )  # fmt: skip
        return out

    def run(self, path: str, mode: str) -> torch.Tensor:
        if mode == "infer":
            with torch.no_grad():
                return self.mix(path, self.x, self.proj)
        self.module.zero_grad(set_to_none=True)
        x, proj = self.x.detach().requires_grad_(True), self.proj.detach().requires_grad_(True)
        out = self.mix(path, x, proj)
        out.backward(self.grad)
        return out.detach()

    def paths(self, mode: str) -> list[str]:
        out = ["fused-16", "fused-32", "repeated"]
        return out + (["rev"] if mode == "infer" and self.rev is not None else [])


def measure(case: Case, mode: str, rounds: int) -> dict[str, list[float]]:
    """Seconds of each path in each round (one warm-up call each first)."""
    paths = case.paths(mode)
    ref = case.run(case.default, mode)
    for p in paths:  # correctness first, and the warm-up
        err = (case.run(p, mode) - ref).abs().max().item()
        if err > 1e-4 * max(1.0, ref.abs().max().item()):
            raise RuntimeError(f"{mode} path {p} differs from {case.default} by {err:.2e}")
    times: dict[str, list[float]] = {p: [] for p in paths}
    for i in range(rounds):
        k = i % len(paths)
        for p in paths[k:] + paths[:k]:
            start = time.perf_counter()
            case.run(p, mode)
            times[p].append(time.perf_counter() - start)
    return times


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, ctypes.CDLL | None]:
    """The command line and the ``--baseline-rev`` kernel (None without it); a bad value, or no
    fused kernel on this machine, is a one-line error (exit 2)."""
    p = scaffold.parser(
        "cycle_scan",
        "The cycle-scan mix fused against the R-fold repeated scan (training and inference), "
        "with paired ratios and intervals.",
        "--cases tiny --rounds 20",
    )
    p.add_argument("--cases", nargs="+", choices=list(CASES), default=["tiny", "vit_b"])
    p.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    p.add_argument("--rounds", type=int, default=12)
    p.add_argument("--baseline-rev", default=None, help="also time this revision's kernel")
    scaffold.add_options(p, "out")
    args = scaffold.parse(p, argv)
    if args.rounds < 2:
        p.error(f"--rounds {args.rounds}: must be at least 2 (an interval needs pairs)")
    reason = cpu_scan.build_reason()
    if reason:
        p.error(f"the fused cycle-scan kernel cannot run here: {reason}")
    rev = None
    if args.baseline_rev:
        try:
            rev = build_revision(args.baseline_rev)
        except ValueError as e:
            p.error(str(e))
    return args, rev


def measure_cases(args: argparse.Namespace, rev: ctypes.CDLL | None) -> list[dict]:
    """One row per case x mode x path: the path's median time and its paired ratio to the
    default fused path, with the 95% interval over the rounds."""
    rows = []
    for name in args.cases:
        c, n, ts = CASES[name]
        case = Case(c, n, ts, rev)
        for mode in args.modes:
            print(f"{name} {mode} ...", flush=True)
            times = measure(case, mode, args.rounds)
            for path, secs in times.items():
                label = f"rev:{args.baseline_rev}" if path == "rev" else path
                rows.append(
                    {
                        "case": name,
                        "C": c,
                        "N": n,
                        "L": (ts // 16) ** 2,
                        "mode": mode,
                        "path": label + (" (default)" if path == case.default else ""),
                        "ms": median_ms(secs),
                        **paired_ratio(secs, times[case.default]),
                        "rounds": len(secs),
                    }
                )
    return rows


def results_table(rows: list[dict]) -> str:
    """The printed table: per row its shape, path, median and ratio with interval."""
    header = ["case", "tokens", "mode", "path", "median ms", "path / default [95% CI]"]
    return render(
        [
            [
                f"{r['case']} (C {r['C']}, N {r['N']})",
                str(r["L"]),
                r["mode"],
                r["path"],
                f"{r['ms']:.2f}",
                interval(r),
            ]
            for r in rows
        ],
        header,
    )


def write_results(
    args: argparse.Namespace, argv: list[str] | None, rows: list[dict], table: str
) -> None:
    """``cycle_scan.csv`` (every row) and ``cycle_scan.md`` (the run's settings and the table)
    under ``--out`` or ``results/cpu``."""
    settings = (
        f"- fp32, batch 1, R = 3, {args.rounds} rounds, every path once a round in rotating "
        f"order; ratio = the path's time / the default fused path's, geometric mean over the "
        f"rounds with its 95% bootstrap interval (above 1: slower than the default)\n"
    )
    title = "The cycle-scan mix: fused kernels against the repeated scan"
    md = scaffold.markdown(title, "cycle_scan", argv, settings, table)
    scaffold.write_results(scaffold.results_dir(args.out), "cycle_scan", list(rows[0]), rows, md)


def main(argv: list[str] | None = None) -> int:
    args, rev = parse_args(argv)
    scaffold.banner(scaffold.CPU)
    rows = measure_cases(args, rev)
    table = results_table(rows)
    scaffold.show(table)
    write_results(args, argv, rows, table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
