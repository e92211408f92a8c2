"""Selective scan (Mamba S6 recurrence) with registered backends (HRSAM spec A.9, ecosystem 5.1).

Semantics and shapes of mamba-ssm's ``selective_scan_fn`` / VMamba's ``selective_scan``::

    u, delta  (B, D, L)        inputs and step sizes
    A         (D, N)           state matrix (real, negative for stability)
    B, C      (B, N, L) or (B, 1, N, L)   input / output projections shared by all channels
    D         (D,) or None     skip connection
    delta_bias (D,) or None    added to delta before the optional softplus

    delta_t = softplus(delta_t + delta_bias)            if delta_softplus
    h_t     = exp(delta_t * A) * h_{t-1} + delta_t * u_t * B_t     (h: (D, N), h_0 = 0)
    y_t     = h_t . C_t + D * u_t

Computed in float32 whatever the input dtype; the result is cast back to ``u.dtype``.

Backends: ``ref`` (the recurrence step by step in plain PyTorch, autograd for gradients: the
ground truth), ``cpu`` (a fused C kernel built on first use, parallel over channels, that keeps
the state in registers, with a hand-written reverse-time backward; the CPU default) and
``mamba_ssm`` (the CUDA kernel, imported lazily).
"""

from __future__ import annotations

import importlib
import importlib.util
import logging

import torch
import torch.nn.functional as F
from torch import Tensor

from hrsam.registry import Registry

log = logging.getLogger(__name__)

SCANS: Registry[type[ScanBackend]] = Registry("scan")
register_scan = SCANS.register


class ScanBackend:
    """Base class: ``support()`` gives reasons, ``scan()`` computes (with gradients)."""

    name: str = ""

    def support(self, device: torch.device | str, backward: bool = False) -> list[str]:
        return []

    def scan(self, u, delta, A, B, C, D, delta_bias, delta_softplus) -> Tensor:  # noqa: N803
        """Arguments already checked and converted to float32 with B, C as (B, N, L)."""
        raise NotImplementedError


def _check(u, delta, A, B, C, D, delta_bias):  # noqa: N803
    """Validates shapes; returns B and C as (batch, N, L)."""

    def shape_error(name: str, t: Tensor, expected: str) -> ValueError:
        return ValueError(
            f"selective_scan: {name} has shape {tuple(t.shape)}, expected {expected} "
            f"(u is {tuple(u.shape)}, A is {tuple(A.shape)})"
        )

    if u.dim() != 3:
        raise shape_error("u", u, "(batch, D, L)")
    b, d, length = u.shape
    if delta.shape != u.shape:
        raise shape_error("delta", delta, f"{tuple(u.shape)} like u")
    if A.dim() != 2 or A.shape[0] != d:
        raise shape_error("A", A, f"({d}, N)")
    n = A.shape[1]
    if A.is_complex():
        raise ValueError("selective_scan: complex A is not supported; pass a real (D, N) A")
    mats = []
    for name, t in (("B", B), ("C", C)):
        if t.dim() == 4 and t.shape[1] == 1:
            t = t[:, 0]
        if t.shape != (b, n, length):
            raise shape_error(name, t, f"({b}, {n}, {length}) or ({b}, 1, {n}, {length})")
        mats.append(t)
    for name, t in (("D", D), ("delta_bias", delta_bias)):
        if t is not None and t.shape != (d,):
            raise shape_error(name, t, f"({d},)")
    return mats


def selective_scan(
    u: Tensor,
    delta: Tensor,
    A: Tensor,  # noqa: N803
    B: Tensor,  # noqa: N803
    C: Tensor,  # noqa: N803
    D: Tensor | None = None,  # noqa: N803
    delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
    backend: str = "auto",
) -> Tensor:
    """Runs the selective scan with the named backend (``"auto"``: best for the device).

    Returns:
        y (B, D, L) in ``u.dtype``.
    """
    Bm, Cm = _check(u, delta, A, B, C, D, delta_bias)
    impl = get_scan(default_scan(u.device) if backend == "auto" else backend)
    backward = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (u, delta, A, Bm, Cm, D, delta_bias)
    )
    reasons = impl.support(u.device, backward)
    if reasons:
        raise RuntimeError(f"scan backend {impl.name!r} cannot run here: " + "; ".join(reasons))
    f32 = [None if t is None else t.float() for t in (u, delta, A, Bm, Cm, D, delta_bias)]
    y = impl.scan(*f32, bool(delta_softplus))
    return y.to(u.dtype)


def list_scans(pattern: str = "*") -> list[str]:
    return SCANS.names(pattern)


def get_scan(name: str) -> ScanBackend:
    """A scan backend instance by name; an unknown name lists the valid ones."""
    return SCANS.get(name)()


def default_scan(device: torch.device | str) -> str:
    """``mamba_ssm`` on CUDA when installed, ``cpu`` on CPU when it builds, else ``ref``."""
    if torch.device(device).type == "cuda" and not get_scan("mamba_ssm").support(device):
        return "mamba_ssm"
    if not get_scan("cpu").support(device):
        return "cpu"
    return "ref"


@register_scan("ref")
class RefScan(ScanBackend):
    """The recurrence step by step; autograd differentiates it. Never materializes (L, D, N)."""

    def scan(self, u, delta, A, B, C, D, delta_bias, delta_softplus):  # noqa: N803
        if delta_bias is not None:
            delta = delta + delta_bias[:, None]
        if delta_softplus:
            delta = F.softplus(delta)
        b, d, _ = u.shape
        h = u.new_zeros(b, d, A.shape[1])
        # unbind once: indexing per step would make autograd write a full-size zero gradient
        # for every step (O(L^2) memory traffic in backward)
        steps = zip(u.unbind(-1), delta.unbind(-1), B.unbind(-1), C.unbind(-1), strict=True)
        ys = []
        for u_t, dt, b_t, c_t in steps:
            dt = dt[:, :, None]  # (B, D, 1)
            h = torch.exp(dt * A) * h + (dt * u_t[:, :, None]) * b_t[:, None, :]
            ys.append((h * c_t[:, None, :]).sum(-1))
        y = torch.stack(ys, -1)
        if D is not None:
            y = y + D[:, None] * u
        return y


@register_scan("cpu")
class CpuScan(ScanBackend):
    """Fused C kernel (OpenMP over channels, SIMD over states), built on first use
    (`hrsam.ssm.cpu_scan`); forward and reverse-time backward."""

    def support(self, device, backward=False):
        if torch.device(device).type != "cpu":
            return [f"the cpu scan runs on CPU tensors only (device is {device})"]
        from hrsam.ssm.cpu_scan import build_reason

        reason = build_reason()
        return [reason] if reason else []

    def scan(self, u, delta, A, B, C, D, delta_bias, delta_softplus):  # noqa: N803
        from hrsam.ssm.cpu_scan import CpuScanFn

        if delta_bias is not None:
            delta = delta + delta_bias[:, None]
        if delta_softplus:
            delta = F.softplus(delta)
        return CpuScanFn.apply(u, delta, A, B, C, D)


@register_scan("mamba_ssm")
class MambaSsmScan(ScanBackend):
    """mamba-ssm's CUDA ``selective_scan_fn`` (requirements-gpu.txt)."""

    def support(self, device, backward=False):
        reasons = []
        if torch.device(device).type != "cuda":
            reasons.append(f"mamba_ssm runs on CUDA only (device is {torch.device(device).type})")
        elif not torch.cuda.is_available():
            reasons.append("CUDA is not available on this machine")
        if importlib.util.find_spec("mamba_ssm") is None:
            reasons.append("mamba-ssm is not installed (pip install -r requirements-gpu.txt)")
        return reasons

    def scan(self, u, delta, A, B, C, D, delta_bias, delta_softplus):  # noqa: N803
        fn = importlib.import_module("mamba_ssm.ops.selective_scan_interface").selective_scan_fn
        return fn(
            u.contiguous(),
            delta.contiguous(),
            A.contiguous(),
            B.contiguous(),
            C.contiguous(),
            D,
            None,
            delta_bias,
            delta_softplus,
        )
