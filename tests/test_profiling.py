"""FLOP counting against torch's FlopCounterMode; the backbone benchmark on a tiny run."""

from __future__ import annotations

import csv

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from hrsam.models import build_model, get_preset
from hrsam.profiling import encoder_flops


@pytest.mark.parametrize(
    ("name", "overrides"),
    [
        ("hrsam_tiny", {"scan": "none", "attention": "shifted_pad"}),
        ("hrsam_tiny", {"scan": "none", "attention": "global"}),
        ("hrsampp_tiny", {"scan": "none", "attention": "window"}),
    ],
)
def test_encoder_flops_match_a_counted_forward(name, overrides):
    """Without scans every FLOP is a matmul or a convolution, which FlopCounterMode counts."""
    preset = get_preset(name, kernel="math", **overrides)
    model = build_model(preset).eval()
    x = torch.randn(1, 3, 320, 320)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model.encode(x)
    counted = counter.get_total_flops()
    assert encoder_flops(preset, 320) == pytest.approx(counted, rel=0.02)


def test_scan_and_sam_flops_grow_as_expected():
    hr, sam = get_preset("hrsam_vit_b"), get_preset("sam_vit_b")
    # window attention: linear in tokens (within padding effects); SAM: quadratic global blocks
    assert 3.9 < encoder_flops(hr, 4096) / encoder_flops(hr, 2048) < 4.1
    assert encoder_flops(sam, 4096) / encoder_flops(sam, 2048) > 6
    assert encoder_flops(get_preset("hrsam_vit_b", scan="none"), 1024) < encoder_flops(hr, 1024)


def test_backbone_benchmark_tiny_run(tmp_path, capsys):
    from benchmarks.backbone import main

    argv = [
        "--ts",
        "128",
        "256",
        "--variants",
        "hrsam_tiny:shifted_kv:sdpa",
        "hrsam_tiny:swin:xformers",
        "--reps",
        "1",
        "--out",
        str(tmp_path),
    ]
    assert main(argv) == 0
    rows = list(csv.DictReader(open(tmp_path / "backbone.csv")))
    assert len(rows) == 4
    ok = [r for r in rows if r["variant"] == "hrsam_tiny:shifted_kv:sdpa"]
    assert all(r["status"] == "ok" and float(r["enc_ms"]) > 0 for r in ok)
    assert all(float(r["gflops"]) > 0 for r in ok)
    bad = [r for r in rows if r["variant"] == "hrsam_tiny:swin:xformers"]
    assert all(r["status"].startswith("unsupported: xformers runs on CUDA only") for r in bad)
    assert "| variant" in capsys.readouterr().out


def test_backbone_benchmark_bad_variant(capsys):
    from benchmarks.backbone import main

    with pytest.raises(SystemExit) as exc:
        main(["--variants", "hrsam_vit_b:windw:sdpa"])
    assert exc.value.code == 2
    assert "unknown attention 'windw'" in capsys.readouterr().err


@pytest.mark.parametrize(("ms_4096", "verdict"), [(6000 * 16 * 1.1, "PASS"), (6000 * 27.6, "FAIL")])
def test_backbone_summary_checks_linear_scaling_against_the_token_count(ms_4096, verdict):
    from benchmarks.backbone_rows import Row, summary

    v = "hrsam_vit_b:shifted_kv:sdpa"
    rows = [Row(v, 1024, 4096, enc_ms=6000.0), Row(v, 4096, 65536, enc_ms=ms_4096)]
    rows += [
        Row("sam_vit_b:global:sdpa", 1024, 4096, enc_ms=9500.0),
        Row("sam_vit_b:global:sdpa", 2048, 16384, enc_ms=73000.0),
    ]
    lines = summary(rows, 170.0)
    hr = next(x for x in lines if v in x)
    assert hr.strip().startswith(verdict) and "faster than the token count" in hr
    sam = next(x for x in lines if "sam_vit_b:global:sdpa: latency ~ tokens^1.47" in x)
    assert sam.strip().startswith("PASS")


def test_backbone_summary_names_the_largest_ts_that_fits():
    from benchmarks.backbone_rows import Row, largest_fitting

    v = "sam_vit_b:global:math"
    rows = [
        Row(v, 512, 1024, enc_ms=1800.0, peak_mb=165.0),
        Row(v, 1024, 4096, enc_ms=14000.0, peak_mb=2376.0),
        Row(v, 2048, 16384, status="oom: needs ~36.6 GB > budget 14.1 GB"),
        Row(v, 4096, 65536, status="oom: needs ~578.2 GB > budget 14.1 GB"),
        Row("hrsam_vit_b:shifted_kv:sdpa", 4096, 65536, enc_ms=97000.0, peak_mb=1801.0),
        Row("hrsam_vit_b:shifted_kv:flash", 4096, 65536, status="unsupported: needs CUDA"),
    ]
    lines = largest_fitting(rows)
    assert lines[1] == (
        "  sam_vit_b:global:math: ts 1024 (2376 MB peak); ts 2048 does not "
        "(oom: needs ~36.6 GB > budget 14.1 GB)"
    )
    assert lines[2].startswith("  hrsam_vit_b:shifted_kv:sdpa: ts 4096 (1801 MB peak)")
    assert "every size in this run fits" in lines[2]
    assert len(lines) == 3  # the unsupported variant says nothing about memory


def test_backbone_summary_gives_the_compile_speedup_against_its_eager_twin():
    from benchmarks.backbone_rows import Row, compile_speedups

    rows = [
        Row("hrsam_tiny:shifted_kv:sdpa", 512, 1024, enc_ms=300.0),
        Row("hrsam_tiny:shifted_kv:sdpa+compile", 512, 1024, enc_ms=200.0, compile_s=12.5),
        Row("hrsam_tiny:shifted_kv:sdpa+compile", 1024, 4096, enc_ms=900.0, compile_s=3.0),
    ]
    lines = compile_speedups(rows)
    assert lines == [
        "torch.compile against eager (same run):",
        "  hrsam_tiny:shifted_kv:sdpa ts=512: 1.50x (300 -> 200 ms), first call 12.5 s",
    ]  # ts 1024 has no eager twin: no line
    assert compile_speedups(rows[:1]) == []


@pytest.mark.slow
def test_backbone_benchmark_runs_a_compiled_variant(tmp_path, capsys):
    from benchmarks.backbone import main

    variants = ["hrsam_tiny:shifted_kv:sdpa", "hrsam_tiny:shifted_kv:sdpa+compile"]
    argv = ["--ts", "64", "--variants", *variants, "--reps", "1", "--out", str(tmp_path)]
    assert main(argv) == 0
    rows = {r["variant"]: r for r in csv.DictReader(open(tmp_path / "backbone.csv"))}
    eager, compiled = rows[variants[0]], rows[variants[1]]
    assert eager["status"] == compiled["status"] == "ok" and eager["compile_s"] == ""
    assert float(compiled["compile_s"]) > 0 and float(compiled["enc_ms"]) > 0
    out = capsys.readouterr().out
    assert "torch.compile against eager (same run):" in out
    assert "hrsam_tiny:shifted_kv:sdpa ts=64: " in out
