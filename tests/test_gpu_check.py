"""``make gpu-check`` on a machine without CUDA: says so, runs the CPU-runnable parts at tiny size,
writes its tables and exits 0 (issue 18)."""

from __future__ import annotations

import csv

import pytest
import torch

from benchmarks import gpu_check
from hrsam import names


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: make gpu-check")
def test_gpu_check_on_cpu_says_what_it_skips_and_exits_0(tmp_path, capsys):
    assert gpu_check.main(["--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "no CUDA GPU on this machine: skipping the gpu-marked tests" in out
    assert "skipped here: gpu-marked tests; xformers / flash kernels; mamba_ssm scan" in out
    report = (tmp_path / "gpu_check.md").read_text()
    assert "- skipped: gpu-marked tests" in report
    attn = list(csv.DictReader(open(tmp_path / "gpu_check_attention.csv")))
    by = {(r["pattern"], r["kernel"]): r["status"] for r in attn}
    assert by[("shifted_kv", "sdpa")] == "ok" and by[("swin", "math")] == "ok"
    assert by[("shifted_kv", "flex")] == "ok (forward only)"
    assert by[("shifted_kv", "flash")].startswith("unsupported: flash-attn runs on CUDA only")
    scans = {
        r["backend"]: r["status"] for r in csv.DictReader(open(tmp_path / "gpu_check_scan.csv"))
    }
    assert scans["chunked"] == "ok" and scans["cpu"] == "ok"
    enc = list(csv.DictReader(open(tmp_path / "gpu_check_encoders.csv")))
    assert {r["preset"] for r in enc} == {"sam_tiny", "hrsam_tiny"}
    assert all(r["status"] == "ok" and float(r[names.ENCODER_MS]) > 0 for r in enc)
    assert {r["kernel"] for r in enc} == {"sdpa"}  # the default build names what auto chose


def test_a_mismatch_is_reported_not_hidden(monkeypatch):
    """The check can fail: a kernel whose bf16 output is off is a MISMATCH row."""
    real = gpu_check._attention_case

    def off(pattern, kernel, *args, **kwargs):
        out, grad = real(pattern, kernel, *args, **kwargs)
        return (out + 1.0 if kernel == "sdpa" else out), grad

    monkeypatch.setattr(gpu_check, "_attention_case", off)
    monkeypatch.setattr(gpu_check, "list_attention", lambda: ["window"])
    rows = gpu_check.check_attention(torch.device("cpu"), 8, 4)
    by = {r["kernel"]: r["status"] for r in rows}
    assert by["sdpa"] == "MISMATCH" and by["math"] == "ok"
