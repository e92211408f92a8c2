"""The cycle-scan benchmark: its paths compute the same mix, its table pairs them with the default,
and bad arguments exit 2 with one line."""

from __future__ import annotations

import csv
import subprocess
import sys

import pytest

from benchmarks import cycle_scan as bench
from hrsam.ssm import cpu_scan

pytestmark = pytest.mark.skipif(
    cpu_scan.build_reason() is not None, reason=f"no C kernel: {cpu_scan.build_reason()}"
)
BASELINE = "9a87a64"  # the last revision with the states-innermost inference kernel


def _has_revision(rev: str) -> bool:
    return (
        subprocess.run(
            ["git", "cat-file", "-e", f"{rev}^{{commit}}"], cwd=bench.ROOT, capture_output=True
        ).returncode
        == 0
    )


def test_table_pairs_every_path_with_the_default(tmp_path):
    assert bench.main(["--cases", "tiny", "--rounds", "3", "--out", str(tmp_path)]) == 0
    rows = list(csv.DictReader(open(tmp_path / "cycle_scan.csv")))
    assert [(r["mode"], r["path"]) for r in rows] == [
        (mode, path)
        for mode in ("train", "infer")
        for path in ("fused-16 (default)", "fused-32", "repeated")
    ]
    for r in rows:
        lo, ratio, hi = float(r["lo"]), float(r["ratio"]), float(r["hi"])
        assert lo <= ratio <= hi and int(r["rounds"]) == 3 and float(r["ms"]) > 0
        if "(default)" in r["path"]:
            assert lo == ratio == hi == 1.0
    assert "path / default [95% CI]" in (tmp_path / "cycle_scan.md").read_text()


@pytest.mark.skipif(not _has_revision(BASELINE), reason=f"{BASELINE} not in this clone's history")
def test_earlier_revision_kernel_computes_the_same_inference():
    case = bench.Case(40, 8, 128, bench.build_revision(BASELINE))  # 64 tokens, three tiles
    ref = case.run(case.default, "infer")
    for path in case.paths("infer"):
        assert (case.run(path, "infer") - ref).abs().max().item() <= 1e-5 * max(
            1.0, ref.abs().max().item()
        ), path
    assert "rev" in case.paths("infer") and "rev" not in case.paths("train")


def test_both_tile_widths_give_the_same_mix_and_gradients():
    case = bench.Case(40, 8, 256)
    outs, grads = {}, {}
    for path in ("fused-16", "fused-32", "repeated"):
        outs[path] = case.run(path, "train")
        grads[path] = [p.grad.clone() for p in case.module.parameters() if p.grad is not None]
    for path in ("fused-32", "repeated"):
        assert (outs[path] - outs["fused-16"]).abs().max().item() <= 1e-5
        for a, b in zip(grads[path], grads["fused-16"], strict=True):
            assert (a - b).abs().max().item() <= 1e-4 * max(1.0, b.abs().max().item())
    with pytest.raises(ValueError, match="w=8: the cycle-scan kernels tile 16 or 32 channels"):
        m = case.module
        cpu_scan.fused_cycle_scan(case.x, case.proj, -m.As_log.exp(), m.Ds, m.ssm_proj_bias,
                                  m.gamma, 8)  # fmt: skip


@pytest.mark.parametrize(
    "args,message",
    [
        (["--rounds", "1"], "--rounds 1: must be at least 2"),
        (["--baseline-rev", "nosuch"], "--baseline-rev nosuch: git has no selective_scan.c"),
        (["--cases", "vit_h"], "invalid choice: 'vit_h'"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(args, message):
    r = subprocess.run(
        [sys.executable, "-m", "benchmarks.cycle_scan", *args],
        cwd=bench.ROOT,
        capture_output=True,
        text=True,
    )
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and message in lines[0], r.stderr
