"""The scan benchmark: a tiny end-to-end run writes checked rows; bad input exits 2."""

from __future__ import annotations

import csv

import pytest

from benchmarks.scan import main


def test_tiny_scan_benchmark(tmp_path, capsys):
    argv = [
        "--lengths",
        "64",
        "300",
        "--channels",
        "8",
        "--state",
        "4",
        "--reps",
        "1",
        "--out",
        str(tmp_path),
    ]
    assert main(argv) == 0
    rows = list(csv.DictReader(open(tmp_path / "scan.csv")))
    by = {(r["backend"], r["L"]): r for r in rows}
    assert by[("mamba_ssm", "64")]["status"].startswith("unsupported: mamba_ssm runs on CUDA only")
    for key in [("cpu", "64"), ("cpu", "300"), ("ref", "300")]:
        assert by[key]["status"] == "ok", by[key]
        assert float(by[key]["fwd_ms"]) > 0 and float(by[key]["fwdbwd_ms"]) > 0
    assert float(by[("cpu", "300")]["max_rel_err_vs_ref"]) <= 1e-5
    assert "| backend" in capsys.readouterr().out


def test_bad_length_exits_2(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--lengths", "0"])
    assert exc.value.code == 2
    assert "--lengths 0: must be >= 1" in capsys.readouterr().err
