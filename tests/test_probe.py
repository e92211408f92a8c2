"""Support is probed, not guessed (issue 18): each kernel and scan backend says "cannot run this
dtype/device", "not installed" or "installed but broken: <the library's error>", from a tiny real
call; stand-in packages play the broken installs."""

from __future__ import annotations

import sys

import pytest
import torch

from hrsam import probe
from hrsam.attention import get_kernel, kernels, variant_support
from hrsam.ssm import scan as scans
from tests.standins import (
    BROKEN_FLASH_ATTN,
    BROKEN_XFORMERS,
    MAMBA_WITHOUT_CUDA_BUILD,
    write_package,
)


@pytest.fixture(autouse=True)
def fresh_probes():
    probe.clear_cache()
    yield
    probe.clear_cache()
    for name in list(sys.modules):
        if name.split(".")[0] in ("xformers", "flash_attn", "mamba_ssm", "selective_scan_cuda"):
            del sys.modules[name]


@pytest.fixture
def standins(tmp_path, monkeypatch):
    """Puts stand-in packages on sys.path and lets the CUDA-only kernels try this CPU."""
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(kernels, "_cuda_reasons", lambda device, name: [])
    monkeypatch.setattr(scans.MambaSsmScan, "static_reasons", lambda self, d, b=False: [])
    return tmp_path


def test_flash_names_the_dtype_on_cuda_and_the_device_on_cpu():
    fp32 = get_kernel("flash").support("cuda", torch.float32)
    assert any("float16 or bfloat16, not torch.float32" in r for r in fp32)
    bf16 = get_kernel("flash").support("cpu", torch.bfloat16)
    assert any("runs on CUDA only (device is cpu)" in r for r in bf16)
    assert not any("float16" in r for r in bf16)  # bf16 is fine: the device is not


def test_a_package_that_is_absent_is_not_installed(monkeypatch):
    monkeypatch.setattr(kernels, "_cuda_reasons", lambda device, name: [])
    if "xformers" in sys.modules or _importable("xformers"):
        pytest.skip("xformers is installed here")
    reasons = get_kernel("xformers").support("cpu", torch.float16)
    assert reasons == ["xformers is not installed (pip install -r requirements-gpu.txt)"]


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def test_a_kernel_whose_call_raises_is_installed_but_broken(standins):
    write_package(standins, BROKEN_XFORMERS)
    reasons = get_kernel("xformers").support("cpu", torch.float16)
    assert reasons == [
        "xformers is installed but broken: RuntimeError: CUDA error: no kernel image is "
        "available for execution on the device"
    ]
    # an unsupported variant is a result with that reason, never a crash
    assert variant_support("shifted_kv", "xformers", "cpu", torch.float16) == reasons


def test_a_kernel_whose_import_raises_is_installed_but_broken(standins):
    write_package(standins, BROKEN_FLASH_ATTN)
    reasons = get_kernel("flash").support("cpu", torch.bfloat16)
    assert len(reasons) == 1
    assert reasons[0].startswith("flash-attn is installed but broken: ImportError: ")
    assert "undefined symbol" in reasons[0]


def test_mamba_without_its_cuda_build_is_broken_and_the_default_falls_back(standins):
    write_package(standins, MAMBA_WITHOUT_CUDA_BUILD)
    reasons = scans.get_scan("mamba_ssm").support("cuda")
    assert reasons[0] == (
        "mamba-ssm is installed but broken: ModuleNotFoundError: "
        "No module named 'selective_scan_cuda'"
    )
    assert "MAMBA_KEEP_CUDA_BUILD=TRUE" in reasons[1]
    assert scans.default_scan("cuda") == "chunked"


def test_mamba_whose_call_raises_is_broken(standins, monkeypatch):
    write_package(
        standins,
        {
            **MAMBA_WITHOUT_CUDA_BUILD,
            "mamba_ssm/ops/selective_scan_interface.py": (
                "def selective_scan_fn(*args, **kwargs):\n"
                "    raise RuntimeError('selective_scan only supports CUDA tensors')\n"
            ),
        },
    )
    reasons = scans.get_scan("mamba_ssm").support("cpu")  # its CUDA-only check is patched out
    assert reasons == [
        "mamba-ssm is installed but broken: RuntimeError: selective_scan only supports CUDA tensors"
    ]
    assert scans.default_scan("cuda") == "chunked"


def test_probes_are_cached_per_process(monkeypatch):
    calls = []
    real = kernels.SdpaKernel.probe

    def counting(self, device, dtype, backward=False):
        calls.append((str(device), dtype, backward))
        return real(self, device, dtype, backward)

    monkeypatch.setattr(kernels.SdpaKernel, "probe", counting)
    for _ in range(3):
        assert get_kernel("sdpa").support("cpu", torch.bfloat16) == []
    assert calls == [("cpu", torch.bfloat16, False)]
    get_kernel("sdpa").support("cpu", torch.bfloat16, backward=True)
    assert len(calls) == 2


def test_every_cpu_kernel_and_scan_probes_clean_here():
    for name in ("math", "sdpa", "flex"):
        assert get_kernel(name).support("cpu", torch.float32) == [], name
        assert get_kernel(name).support("cpu", torch.bfloat16) == [], name
    for name in ("ref", "cpu", "chunked"):
        assert scans.get_scan(name).support("cpu", backward=True) == [], name
    assert scans.default_scan("cpu") == "cpu"
    # ref is never a default: without CUDA the cuda default is still the chunked scan
    assert scans.default_scan("cuda") == "chunked"


def test_cuda_without_cuda_says_so():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert get_kernel("sdpa").support("cuda", torch.float32) == [
        "CUDA is not available on this machine"
    ]
    assert scans.get_scan("chunked").support("cuda") == ["CUDA is not available on this machine"]


def test_xformers_bias_rows_are_aligned_to_8():
    # SAM's 14 x 14 windows: 196 keys per row, not a multiple of 8 (xformers refuses it in half
    # precision)
    bias = torch.randn(3, 1, 196, 196, dtype=torch.bfloat16)
    out = kernels.aligned_bias(bias)
    assert torch.equal(out, bias)
    assert all(s % 8 == 0 for s in out.stride()[:-1]) and out.stride(-1) == 1
    aligned = torch.randn(3, 1, 64, 64)
    assert kernels.aligned_bias(aligned) is aligned


def test_a_model_built_on_the_meta_device_does_not_poison_the_probes():
    """The cause of an order dependency (a training test after one that built a model under
    ``with torch.device("meta")`` ran ``math``): the kernel ``auto`` of that build probed SDPA
    with meta tensors and cached it as broken. Probes now run outside the caller's default
    device."""
    from hrsam.models import build_model

    probe.clear_cache()
    try:
        with torch.device("meta"):
            build_model("hrsam_tiny", training=True)
        assert get_kernel("sdpa").support("cpu", torch.float32, backward=True) == []
        assert get_kernel("sdpa").support("cpu", torch.float32) == []
        assert kernels.resolve_kernel("auto", "cpu", torch.float32, backward=True) == "sdpa"
    finally:
        probe.clear_cache()
