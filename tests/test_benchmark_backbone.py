"""The backbone benchmark's official segment-anything row and its same-run ratios."""

from __future__ import annotations

import csv
import importlib.util

import pytest

from benchmarks.backbone_models import OFFICIAL
from benchmarks.backbone_rows import Row, official_ratios


@pytest.mark.skipif(
    importlib.util.find_spec("segment_anything") is None,
    reason="segment-anything is not installed (pip install -e .[test])",
)
def test_backbone_benchmark_times_the_official_encoder_beside_ours(tmp_path, capsys):
    from benchmarks.backbone import main

    argv = ["--ts", "64", "--variants", OFFICIAL, "sam_vit_b:global:sdpa", "--reps", "1"]
    assert main([*argv, "--out", str(tmp_path)]) == 0
    rows = {r["variant"]: r for r in csv.DictReader(open(tmp_path / "backbone.csv"))}
    official, ours = rows[OFFICIAL], rows["sam_vit_b:global:sdpa"]
    assert official["status"] == ours["status"] == "ok"
    assert float(official["enc_ms"]) > 0 and float(official["dec_ms"]) > 0
    assert float(official["peak_mb"]) > 0
    assert 0 <= float(official["max_err"]) <= 1e-4  # checked before it was timed
    assert ours["max_err"] == ""
    out = capsys.readouterr().out
    assert "ts=64: sam_vit_b:global:sdpa" in out and "the speed of official segment-anything" in out


@pytest.mark.parametrize(("ours_ms", "verdict"), [(900.0, "PASS"), (1100.0, "FAIL")])
def test_official_ratio_is_official_over_ours(ours_ms, verdict):
    rows = [
        Row(OFFICIAL, 512, 1024, enc_ms=1000.0),
        Row("sam_vit_b:global:sdpa", 512, 1024, enc_ms=ours_ms),
        Row("hrsam_vit_b:shifted_kv:sdpa", 512, 1024, enc_ms=500.0),
        Row("sam_vit_b:global:sdpa", 1024, 4096, enc_ms=5000.0),  # no official row at 1024
    ]
    lines = official_ratios(rows)
    assert lines[0] == "Against the official segment-anything encoder (same run):"
    sam = next(x for x in lines if "sam_vit_b:global:sdpa" in x)
    assert sam.strip().startswith(verdict)
    assert f"{1000.0 / ours_ms:.2f}x the speed" in sam and "(target >= 1.00x)" in sam
    hr = next(x for x in lines if "hrsam_vit_b" in x)
    assert "2.00x the speed" in hr
    assert not any("ts=1024" in x for x in lines)
    assert official_ratios(rows[1:]) == []


def test_interleaved_rounds_time_every_checked_case(tmp_path, capsys):
    from benchmarks.backbone import main

    variants = ["hrsam_tiny:shifted_kv:sdpa", "hrsam_tiny:swin:sdpa", "hrsam_tiny:swin:xformers"]
    argv = ["--ts", "64", "128", "--variants", *variants, "--reps", "2", "--interleave"]
    assert main([*argv, "--out", str(tmp_path)]) == 0
    rows = list(csv.DictReader(open(tmp_path / "backbone.csv")))
    ok = [r for r in rows if r["status"] == "ok"]
    assert len(ok) == 4 and all(float(r["enc_ms"]) > 0 and float(r["gflops"]) > 0 for r in ok)
    out = capsys.readouterr().out
    assert out.count("round 2/2") == 4  # one call per case per round
    assert "interleaved rounds" in (tmp_path / "backbone.md").read_text()


def test_a_bare_preset_is_the_default_build_and_every_row_names_its_kernel(tmp_path):
    """Issue #29: ``sam_tiny`` alone is the model as ``build_model`` gives it (kernel ``auto``,
    resolved here to the fused kernel); the table and CSV name the kernel of every row."""
    from benchmarks.backbone import main
    from benchmarks.backbone_models import parse_variant

    assert parse_variant("sam_vit_b") == ("sam_vit_b", None, "auto")
    argv = ["--ts", "64", "--variants", "sam_tiny", "sam_tiny:global:math", "--reps", "1"]
    assert main([*argv, "--out", str(tmp_path)]) == 0
    rows = {r["variant"]: r for r in csv.DictReader(open(tmp_path / "backbone.csv"))}
    assert rows["sam_tiny"]["kernel"] == "sdpa" and rows["sam_tiny:global:math"]["kernel"] == "math"
    md = (tmp_path / "backbone.md").read_text()
    assert "| variant" in md and "| kernel" in md and "| sam_tiny " in md


@pytest.mark.parametrize(("ours_ms", "verdict"), [(600.0, "PASS"), (700.0, "FAIL")])
def test_the_default_build_must_run_at_one_and_a_half_times_the_official_at_1024(ours_ms, verdict):
    rows = [
        Row(OFFICIAL, 1024, 4096, enc_ms=1000.0, kernel="official"),
        Row("sam_vit_b", 1024, 4096, enc_ms=ours_ms, kernel="sdpa"),
    ]
    [line] = official_ratios(rows)[1:]
    assert line.strip().startswith(verdict) and "(target >= 1.50x)" in line
    assert "sam_vit_b (sdpa)" in line
