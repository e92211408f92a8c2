"""The attention benchmark: bad input, a tiny end-to-end run, FLOP counts, the target checks."""

from __future__ import annotations

import csv
import re

import pytest
import torch

from benchmarks._timing import PeakMemory
from benchmarks.attention import main, parse_args, summary
from benchmarks.attention_cases import BenchCase, BenchResult, useful_flops


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--patterns", "windw"], "invalid choice: 'windw'"),
        (["--kernels", "cuda_fast"], "invalid choice: 'cuda_fast'"),
        (["--grids", "0"], "--grids 0: a grid side must be >= 1 token"),
        (["--window-size", "0"], "--window-size 0: must be >= 1"),
        (["--pair-rounds", "-1"], "--pair-rounds -1: must be >= 0"),
    ],
)
def test_bad_arguments_exit_2_naming_the_value(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        parse_args(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_tiny_run_writes_checked_rows(tmp_path, capsys):
    argv = [
        "--grids",
        "20",
        "--patterns",
        "swin",
        "shifted_kv",
        "--kernels",
        "math",
        "sdpa",
        "xformers",
        "--quick",
        "--out",
        str(tmp_path),
    ]
    assert main(argv) == 0
    rows = list(csv.DictReader(open(tmp_path / "attention.csv")))
    assert len(rows) == 6
    by = {(r["pattern"], r["kernel"]): r for r in rows}
    assert by[("swin", "xformers")]["status"].startswith("unsupported: xformers runs on CUDA only")
    for key in [("swin", "math"), ("swin", "sdpa"), ("shifted_kv", "math"), ("shifted_kv", "sdpa")]:
        r = by[key]
        assert r["status"] == "ok", r
        assert float(r["fwd_ms"]) > 0 and float(r["bwd_ms"]) > 0
        assert float(r["max_err"]) <= 1e-4
    out = capsys.readouterr().out
    assert "| pattern" in out and "Targets at 20x20 tokens" in out
    assert (tmp_path / "attention.md").read_text().count("| shifted_kv") == 3


def test_useful_flops_counts_real_queries():
    # 64x64 tokens, window 16: 4 * 4096 queries * 256 keys * 12 heads * 64 channels
    assert useful_flops(BenchCase("shifted_kv", "sdpa", 64)) == 4 * 4096 * 256 * 12 * 64
    assert useful_flops(BenchCase("global", "sdpa", 8)) == 4 * 64 * 64 * 12 * 64


def _res(pattern, kernel, ms, gflops=None):
    return BenchResult(BenchCase(pattern, kernel, 128), fwd_ms=ms, gflops=gflops)


def test_summary_passes_and_fails_on_ratios():
    good = [
        _res("swin", "math", 460),
        _res("swin", "sdpa", 250),
        _res("shifted_kv", "sdpa", 212, gflops=60),
        _res("shifted_kv", "math", 400),
    ]
    lines = summary(good, {128: 79.0}, 128)
    assert sum(line.strip().startswith("PASS") for line in lines) == 4
    bad = [
        _res("swin", "math", 300),
        _res("swin", "sdpa", 200),
        _res("shifted_kv", "sdpa", 250, gflops=30),
    ]
    lines = summary(bad, {128: 79.0}, 128)
    assert [line.split()[0] for line in lines[1:]] == ["FAIL", "FAIL", "FAIL"]


def test_peak_memory_cpu_counts_live_tensors():
    with PeakMemory(torch.device("cpu")) as mem:
        a = torch.ones(4 * 2**20)  # 16 MiB
        b = a * 2  # 16 MiB, both alive
        del a
        c = b + 1  # 16 MiB, a already freed
        del b, c
    assert 31.9 <= mem.mb <= 33


def test_generic_index_row_and_training_checks(tmp_path, capsys):
    argv = ["--grids", "20", "--patterns", "swin", "shifted_kv", "shifted_kv+index"]
    argv += ["--kernels", "sdpa", "--quick", "--out", str(tmp_path)]
    assert main(argv) == 0
    rows = {r["pattern"]: r for r in csv.DictReader(open(tmp_path / "attention.csv"))}
    assert set(rows) == {"swin", "shifted_kv", "shifted_kv+index"}
    for r in rows.values():
        assert r["status"] == "ok" and float(r["max_err"]) <= 1e-4
        assert float(r["fwd_bwd_ms"]) == pytest.approx(
            float(r["fwd_ms"]) + float(r["bwd_ms"]), abs=0.11
        )
        assert float(r["train_ms"]) >= float(r["bwd_ms"])
    out = capsys.readouterr().out
    assert "shifted_kv/sdpa fwd+bwd" in out and "vs swin/sdpa" in out
    assert "shifted_kv/sdpa backward" in out and "with the scatter-add gathers" in out


@pytest.mark.parametrize(("kv_bwd", "verdict"), [(80.0, "PASS"), (200.0, "FAIL")])
def test_training_check_compares_fwd_plus_bwd_with_swin(kv_bwd, verdict):
    from benchmarks.attention import training_checks

    def res(pattern, fwd, bwd):
        return BenchResult(
            BenchCase(pattern, "sdpa", 128), fwd_ms=fwd, bwd_ms=bwd, train_ms=fwd + bwd
        )

    lines = training_checks([res("swin", 50.0, 100.0), res("shifted_kv", 40.0, kv_bwd)], 128)
    assert len(lines) == 1 and lines[0].strip().startswith(verdict)
    assert f"{150.0 / (40.0 + kv_bwd):.2f}x" in lines[0]


def test_paired_rounds_interleave_and_bound_the_ratio(tmp_path):
    """Without --quick the training target is also measured in interleaved rounds: one line per
    grid and kernel, the geometric-mean ratio inside its bootstrap interval."""
    argv = ["--grids", "20", "--patterns", "swin", "shifted_kv", "--kernels", "sdpa"]
    argv += ["--reps", "1", "--pair-rounds", "3", "--out", str(tmp_path)]
    assert main(argv) == 0
    md = (tmp_path / "attention.md").read_text()
    [line] = [x for x in md.splitlines() if x.strip().startswith(("PASS 20x20", "FAIL 20x20"))]
    ratio, lo, hi = (float(v) for v in re.findall(r"([\d.]+)x \[([\d.]+), ([\d.]+)\]", line)[0])
    assert lo <= ratio <= hi and "medians of 3 rounds" in line


@pytest.mark.parametrize(
    ("ratio", "lo", "hi", "verdict", "separated"),
    [
        (1.2, 1.1, 1.3, "PASS", True),
        (1.02, 0.95, 1.1, "PASS", False),
        (0.9, 0.8, 0.95, "FAIL", True),
    ],
)
def test_paired_lines_say_pass_fail_and_whether_separated(ratio, lo, hi, verdict, separated):
    from benchmarks.attention import paired_lines

    r = dict(grid=64, kernel="sdpa", swin_ms=10.0, kv_ms=9.0, ratio=ratio, lo=lo, hi=hi, rounds=6)
    [_, line] = paired_lines([r])
    assert line.strip().startswith(f"{verdict} 64x64 sdpa: {ratio:.2f}x")
    assert ("not separated from 1.00" in line) != separated
