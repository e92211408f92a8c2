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
ground truth, run only when asked for), ``cpu`` (a fused C kernel built on first use, parallel
over channels, that keeps the state in registers, with a hand-written reverse-time backward; the
CPU default), ``chunked`` (plain PyTorch on any device: a parallel scan inside chunks of the
sequence with the state carried between them, recomputed chunk by chunk in backward; the CUDA
default when mamba_ssm is absent or broken) and ``mamba_ssm`` (the CUDA kernel, imported lazily).

``support()`` is probed (`hrsam.probe`): a tiny real scan on the device, so an installed but
broken mamba-ssm (no ``selective_scan_cuda``, a wheel built for another torch) says so and the
default falls back to ``chunked`` instead of crashing every forward.
"""

from __future__ import annotations

import importlib
import logging

import torch
import torch.nn.functional as F
from torch import Tensor

from hrsam.probe import device_reasons, support_reasons
from hrsam.registry import Registry

log = logging.getLogger(__name__)

SCANS: Registry[type[ScanBackend]] = Registry("scan")
register_scan = SCANS.register


class ScanBackend:
    """Base class: ``support()`` gives reasons, ``scan()`` computes (with gradients)."""

    name: str = ""
    module: str | None = None  # the optional package it imports, and the name users install
    package: str = ""
    # how far this backend may be from ``ref`` in float32 (rtol, atol): fast-math kernels differ
    tolerance: tuple[float, float] = (1e-5, 0.0)

    def support(self, device: torch.device | str, backward: bool = False) -> list[str]:
        """Why this backend cannot run on ``device`` (with a backward pass when ``backward``);
        empty when a tiny real scan ran there (cached per process)."""
        return support_reasons(
            self.static_reasons(device, backward),
            self.module,
            self.package or (self.name if self.module else f"scan {self.name}"),
            ("scan", self.name, str(torch.device(device)), bool(backward)),
            lambda: self.probe(device, backward),
        )

    def static_reasons(self, device, backward: bool = False) -> list[str]:
        """What rules out this device before anything is imported or called."""
        return device_reasons(device)

    def probe(self, device, backward: bool = False) -> None:
        """A tiny real scan (and its backward when asked) on ``device``; raises what it raises."""
        device = torch.device(device)
        gen = torch.Generator().manual_seed(0)
        b, d, n, length = 1, 4, 4, 16

        def rand(*shape, scale=1.0):
            t = (torch.randn(*shape, generator=gen) * scale).to(device)
            return t.requires_grad_(backward)

        u, delta = rand(b, d, length), rand(b, d, length, scale=0.5)
        A = -torch.rand(d, n, generator=gen).to(device).requires_grad_(backward)
        Bm, Cm, D = rand(b, n, length), rand(b, n, length), rand(d)
        with torch.set_grad_enabled(backward):
            y = self.scan(u, delta, A, Bm, Cm, D, None, True)
            if backward:
                y.sum().backward()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if y.shape != u.shape or not torch.isfinite(y).all():
            raise RuntimeError(f"scan {self.name} returned a wrong or non-finite result")

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
    """``mamba_ssm`` on CUDA when its probe runs, ``cpu`` on CPU when it builds and runs, else
    ``chunked`` (any device). ``ref`` is never a default: it runs only when asked for."""
    kind = torch.device(device).type
    if kind == "cuda" and not get_scan("mamba_ssm").support(device, backward=True):
        return "mamba_ssm"
    if kind == "cpu" and not get_scan("cpu").support(device, backward=True):
        return "cpu"
    return "chunked"


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

    def static_reasons(self, device, backward=False):
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


@register_scan("chunked")
class ChunkedScan(ScanBackend):
    """Plain PyTorch on any device: a parallel scan inside chunks with the state carried between
    them; backward recomputes chunk by chunk (`hrsam.ssm.chunked`). No (L, D, N) tensor."""

    def scan(self, u, delta, A, B, C, D, delta_bias, delta_softplus):  # noqa: N803
        from hrsam.ssm.chunked import chunked_scan

        if delta_bias is not None:
            delta = delta + delta_bias[:, None]
        if delta_softplus:
            delta = F.softplus(delta)
        return chunked_scan(u, delta, A, B, C, D)


@register_scan("mamba_ssm")
class MambaSsmScan(ScanBackend):
    """mamba-ssm's CUDA ``selective_scan_fn`` (requirements-gpu.txt).

    Built with fast math: its own tests compare with rtol 6e-4 / atol 2e-3 in float32."""

    module, package = "mamba_ssm.ops.selective_scan_interface", "mamba-ssm"
    tolerance = (6e-4, 2e-3)

    def static_reasons(self, device, backward=False):
        if torch.device(device).type != "cuda":
            return [f"mamba_ssm runs on CUDA only (device is {torch.device(device).type})"]
        return device_reasons(device)

    def support(self, device, backward=False):
        reasons = super().support(device, backward)
        if any("selective_scan_cuda" in r for r in reasons):  # pip built it without CUDA
            reasons.append(
                "reinstall with MAMBA_KEEP_CUDA_BUILD=TRUE pip install --no-deps "
                "--no-build-isolation --no-binary mamba-ssm mamba-ssm (requirements-gpu.txt)"
            )
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
