"""``python -m hrsam.info``: the environment report (issue 18)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hrsam import info
from tests.helpers import cli

ROOT = Path(__file__).resolve().parent.parent


def _run(*args: str):
    """``python -m hrsam.info *args``, in-process (its exit code, stdout and stderr)."""
    return cli(info.main, *args, cwd=ROOT)


def test_info_lists_torch_every_kernel_and_scan_with_status_and_defaults():
    p = _run("device=cpu")
    assert p.returncode == 0, p.stderr
    out = p.stdout
    assert "torch" in out and "CUDA" in out
    for name in ("math", "sdpa", "flex", "xformers", "flash"):
        assert f"  {name} " in out
    for name in ("ref", "cpu", "chunked", "mamba_ssm"):
        assert f"  {name} " in out
    assert "default scan: cpu -> cpu, cuda -> chunked" in out
    # a CUDA-only package: its status, its reason and its install hint
    if info._version("flash-attn") is None:
        assert "flash      bf16  not installed  flash-attn runs on CUDA only (device is cpu)" in out
        assert "install: pip install --no-deps --no-build-isolation flash-attn" in out
    assert "sdpa       bf16  ok" in out


def test_info_json_has_a_status_per_kernel_dtype_and_scan():
    p = _run("device=cpu", "json=true")
    r = json.loads(p.stdout)
    kernels = {(k["name"], k["precision"]): k["status"] for k in r["kernels"]}
    assert kernels[("sdpa", "fp32")] == "ok" and kernels[("math", "bf16")] == "ok"
    assert {s["name"] for s in r["scans"]} == {"ref", "cpu", "chunked", "mamba_ssm"}
    assert r["default_scan"]["cpu"] == "cpu"


def test_info_bad_device_is_one_line_and_exit_2():
    p = _run("device=tpu")
    assert p.returncode == 2 and p.stderr.strip().count("\n") == 0
    assert "device='tpu'" in p.stderr


@pytest.mark.parametrize(
    ("reasons", "status"),
    [
        ([], "ok"),
        (["xformers is not installed (pip install -r requirements-gpu.txt)"], "not installed"),
        (["xformers is installed but broken: RuntimeError: x"], "broken"),
        (["flash-attn needs float16 or bfloat16, not torch.float32"], "unsupported"),
    ],
)
def test_status_of_reasons(reasons, status):
    assert info.status_of(reasons) == status


def test_summary_is_one_line():
    s = info.summary("cpu")
    assert "\n" not in s and s.startswith("torch ") and "default scan cpu" in s
