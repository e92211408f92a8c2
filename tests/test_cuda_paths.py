"""CUDA variants of the kernel, scan and model paths (gpu-marked: they skip without CUDA; run by
``make gpu-check``). CPU versions of each live in test_attention / test_scan / test_models."""

from __future__ import annotations

import pytest
import torch

from benchmarks.gpu_check import _attention_case, _rel
from hrsam.attention import list_attention, list_kernels, variant_support

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("kernel", [k for k in list_kernels() if k != "math"])
@pytest.mark.parametrize("pattern", list_attention())
def test_cuda_kernel_bf16_forward_backward_vs_fp32_math(pattern, kernel):
    cuda = torch.device("cuda")
    reasons = variant_support(pattern, kernel, cuda, torch.bfloat16, backward=True)
    if reasons:
        pytest.skip("; ".join(reasons))
    ref_out, ref_grad = _attention_case(pattern, "math", 40, 16, cuda, torch.float32, True)
    half_out, half_grad = _attention_case(pattern, "math", 40, 16, cuda, torch.bfloat16, True)
    out, grad = _attention_case(pattern, kernel, 40, 16, cuda, torch.bfloat16, True)
    assert _rel(out, ref_out) <= 2 * _rel(half_out, ref_out) + 1e-3
    assert _rel(grad, ref_grad) <= 2 * _rel(half_grad, ref_grad) + 1e-3


@pytest.mark.parametrize("pattern", ["window", "shifted_kv", "swin"])
def test_compiled_flex_on_cuda_matches_math(pattern, monkeypatch):
    monkeypatch.setenv("HRSAM_FLEX_COMPILE", "1")
    cuda = torch.device("cuda")
    ref, _ = _attention_case(pattern, "math", 40, 16, cuda, torch.float32, False)
    out, _ = _attention_case(pattern, "flex", 40, 16, cuda, torch.float32, False)
    assert _rel(out, ref) <= 1e-4


@pytest.mark.parametrize("kernel", ["sdpa", "xformers"])
def test_sam_windows_of_196_keys_run_in_bf16(kernel):
    """SAM's 14 x 14 windows give a 196-wide relative-position bias: xformers needs its rows
    aligned to 8 in half precision (`kernels.aligned_bias`)."""
    from hrsam.models import build_model
    from hrsam.precision import autocast

    if variant_support("global", kernel, "cuda", torch.bfloat16):
        pytest.skip(f"{kernel} does not run here")
    model = build_model("sam_tiny", kernel=kernel, window_size=14).cuda().eval()
    x = torch.randn(1, 3, 448, 448, device="cuda")
    with torch.no_grad(), autocast("cuda", "bf16"):
        emb = model.encode(x)
    assert torch.isfinite(emb.float()).all()


def test_hrsam_encoder_on_cuda_uses_a_real_scan_in_bf16():
    from hrsam.models import build_model
    from hrsam.precision import autocast
    from hrsam.ssm.scan import default_scan

    assert default_scan("cuda") in ("mamba_ssm", "chunked")
    model = build_model("hrsam_tiny").cuda().eval()
    x = torch.randn(1, 3, 512, 512, device="cuda")
    with torch.no_grad(), autocast("cuda", "bf16"):
        emb = model.encode(x)
    assert torch.isfinite(emb.float()).all()
    model.train()
    with autocast("cuda", "bf16"):
        model.encode(x).float().square().mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_hrsam_evaluate_runs_on_cuda(tmp_path):
    from hrsam import evaluate as cli_evaluate

    args = [
        "device=cuda",
        "precision=bf16",
        "data.name=synthetic",
        f"data.root={tmp_path / 'data'}",
        "data.size=64",
        "data.n_val=1",
        "ts=64",
        "max_clicks=2",
        f"out={tmp_path / 'out'}",
    ]
    assert cli_evaluate.main(args) == 0
