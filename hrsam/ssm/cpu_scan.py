"""The fused CPU selective scan: a small C kernel (``hrsam/ssm/csrc/selective_scan.c``) built on
first use.

The kernel keeps each channel's N-state in a local array, runs channels in parallel with OpenMP
and vectorizes the loop over states (``expf`` through glibc's libmvec), so nothing of size
(L, D, N) is materialized. It is compiled once per machine with the system C compiler
(``$CC``, else ``gcc`` or ``cc``; ``-O3 -march=native -ffast-math -fopenmp``) into
``$HRSAM_CACHE`` (default ``~/.cache/hrsam``), keyed by a hash of the source, the flags, the
compiler and the CPU, and loaded with ctypes. Without a compiler the backend reports why and the
``ref`` scan is the fallback.

Backward: the forward stores the state every ``CHUNK`` steps; the backward walks the chunks from
last to first, recomputes a chunk's states from its checkpoint and runs the adjoint recurrence
backwards in time::

    g_t   = dy_t C_t + a_{t+1} g_{t+1}          (adjoint of h_t, a_t = exp(dt_t A))
    dC_t  = sum_d dy_t h_t        dB_t = sum_d g_t dt_t u_t       dD = sum_t dy_t u_t
    du_t  = sum_n g_t dt_t B_t + D dy_t
    ddt_t = sum_n g_t (h_{t-1} a_t A + u_t B_t)   dA = sum_t g_t h_{t-1} a_t dt_t

Bias and softplus of delta are applied in PyTorch before the kernel, so autograd handles them.

`fused_cycle_scan` runs a whole `CycleScan` mix (bias, softplus, R repeats with the state
carried across them, gamma mix) as one kernel on the token-major projections, and with
gradients its backward as one more (`CycleScanFn`), so the R-fold copies of u, dt, B and C and
their gradients never exist. Its tiles put channels in the vector lanes, which suits the small
state sizes of the presets (N = 8 tiny, 32 ViT-B) better than a loop over states.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import math
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch

log = logging.getLogger(__name__)

CHUNK = 64
SOURCE = Path(__file__).parent / "csrc" / "selective_scan.c"
FLAGS = ["-O3", "-march=native", "-ffast-math", "-fopenmp", "-shared", "-fPIC", "-std=c99"]


class BuildError(RuntimeError):
    """The C kernel could not be built on this machine."""


def compiler() -> str | None:
    """The C compiler to use, or None."""
    return os.environ.get("CC") or shutil.which("gcc") or shutil.which("cc")


def _cpu_id() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return line
    except OSError:
        pass
    return os.uname().machine


def cache_dir() -> Path:
    return Path(os.environ.get("HRSAM_CACHE", Path.home() / ".cache" / "hrsam"))


@functools.lru_cache(maxsize=1)
def library() -> ctypes.CDLL:
    """Builds (once per machine) and loads the kernel; raises `BuildError` with the reason."""
    cc = compiler()
    if cc is None:
        raise BuildError("no C compiler found (set CC or install gcc)")
    source = SOURCE.read_bytes()
    try:
        version = subprocess.run([cc, "--version"], capture_output=True, text=True).stdout
    except OSError as e:
        raise BuildError(f"C compiler {cc!r} does not run: {e}") from None
    key = hashlib.sha256(
        b"\0".join([source, " ".join(FLAGS).encode(), version.encode(), _cpu_id().encode()])
    ).hexdigest()[:16]
    out = cache_dir() / f"selective_scan-{key}.so"
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        log.info("building the CPU selective scan with %s into %s", cc, out)
        with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
            tmp_lib = Path(tmp) / out.name
            proc = subprocess.run(
                [cc, *FLAGS, str(SOURCE), "-o", str(tmp_lib), "-lm"],
                capture_output=True,
                text=True,
            )
            if proc.returncode != 0:
                first = (proc.stderr.strip().splitlines() or ["?"])[-1]
                raise BuildError(f"building {SOURCE.name} with {cc} failed: {first}")
            os.replace(tmp_lib, out)  # atomic: concurrent builders never see half a file
    lib = ctypes.CDLL(str(out))
    ptr, i32 = ctypes.c_void_p, ctypes.c_int
    lib.hrsam_scan_fwd.argtypes = [i32] * 6 + [ptr] * 8
    lib.hrsam_scan_bwd.argtypes = [i32] * 6 + [ptr] * 14
    lib.hrsam_scan_fwd.restype = lib.hrsam_scan_bwd.restype = None
    i64 = ctypes.c_long
    rows = [ptr, i64, ptr, i64, ptr, ptr, i64]  # u, su, dt, sdt, Bm, Cm, sbc
    lib.hrsam_cycle_scan_fwd.argtypes = [i32] * 8 + rows + [ptr] * 7
    lib.hrsam_cycle_scan_bwd.argtypes = [i32] * 8 + rows + [ptr] * 9 + [i64] + [ptr] * 5
    lib.hrsam_cycle_scan_fwd.restype = lib.hrsam_cycle_scan_bwd.restype = None
    return lib


def build_reason() -> str | None:
    """Why the kernel cannot be used here, or None when it can."""
    try:
        library()
    except BuildError as e:
        return str(e)
    return None


def max_state() -> int:
    return library().hrsam_scan_max_state()


def _p(t: torch.Tensor) -> ctypes.c_void_p:
    return ctypes.c_void_p(t.data_ptr())


def _c(t: torch.Tensor) -> torch.Tensor:
    return t.detach().float().contiguous()


class CpuScanFn(torch.autograd.Function):
    """y = scan(u, delta, A, B, C, D); delta already biased and softplus'd; float32 CPU tensors."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D):  # noqa: N803
        nb, nd, length = u.shape
        n = A.shape[1]
        if n > max_state():
            raise ValueError(f"state size N={n} exceeds the CPU scan's maximum {max_state()}")
        u, delta, A = _c(u), _c(delta), _c(A)
        Bt = B.detach().float().transpose(1, 2).contiguous()  # (B, L, N): a step's states adjacent
        Ct = C.detach().float().transpose(1, 2).contiguous()
        Dv = _c(D) if D is not None else u.new_zeros(nd)
        out = torch.empty_like(u)
        ckpt = u.new_empty(nb, nd, max(1, math.ceil(length / CHUNK)), n)
        library().hrsam_scan_fwd(
            nb,
            nd,
            length,
            n,
            CHUNK,
            torch.get_num_threads(),
            _p(u),
            _p(delta),
            _p(A),
            _p(Bt),
            _p(Ct),
            _p(Dv),
            _p(out),
            _p(ckpt),
        )
        ctx.save_for_backward(u, delta, A, Bt, Ct, Dv, ckpt)
        ctx.has_d = D is not None
        return out

    @staticmethod
    def backward(ctx, dy):
        u, delta, A, Bt, Ct, Dv, ckpt = ctx.saved_tensors
        nb, nd, length = u.shape
        n = A.shape[1]
        threads = torch.get_num_threads()
        dy = _c(dy)
        du, ddl = torch.empty_like(u), torch.empty_like(u)
        dA_part = u.new_zeros(nb, nd, n)
        dD_part = u.new_zeros(nb, nd)
        dB_part = u.new_zeros(threads, nb, length, n)
        dC_part = u.new_zeros(threads, nb, length, n)
        library().hrsam_scan_bwd(
            nb,
            nd,
            length,
            n,
            CHUNK,
            threads,
            _p(u),
            _p(delta),
            _p(A),
            _p(Bt),
            _p(Ct),
            _p(Dv),
            _p(dy),
            _p(ckpt),
            _p(du),
            _p(ddl),
            _p(dA_part),
            _p(dD_part),
            _p(dB_part),
            _p(dC_part),
        )
        dB = dB_part.sum(0).transpose(1, 2)
        dC = dC_part.sum(0).transpose(1, 2)
        dD = dD_part.sum(0) if ctx.has_d else None
        return du, ddl, dA_part.sum(0), dB, dC, dD


def _cycle_inputs(u, proj, A, D, delta_bias, gamma):  # noqa: N803
    """Checks shapes; float32 operands laid out as the kernels read them."""
    b, length, c = u.shape
    n = A.shape[1]
    if n > max_state():
        raise ValueError(f"state size N={n} exceeds the CPU scan's maximum {max_state()}")
    if proj.shape != (b, length, c + 2 * n):
        expected = (b, length, c + 2 * n)
        raise ValueError(f"proj has shape {tuple(proj.shape)}, expected {expected}")
    u, proj = u.detach().float(), proj.detach().float().contiguous()
    if u.stride(-1) != 1 or (b > 1 and u.stride(0) != length * u.stride(1)):
        u = u.contiguous()  # the kernels walk rows of one stride across the batch
    gamma = _c(gamma.reshape(c, -1))
    D = _c(D) if D is not None else u.new_zeros(c)
    return u, proj, _c(A), D, _c(delta_bias), gamma


def lanes(n: int) -> int:
    """Channels per tile of the cycle-scan kernels (the vector loops' width): 32 for N >= 16
    states, else 16 (measured on the tiny and ViT-B shapes; see ``hrsam_cycle_scan_fwd``)."""
    return 32 if n >= 16 else 16


def row_args(u: torch.Tensor, proj: torch.Tensor, n: int) -> list:
    """The kernels' (u, su, dt, sdt, Bm, Cm, sbc) arguments: row pointers and row strides."""
    c, row = u.shape[2], proj.stride(1)
    return [_p(u), u.stride(1), _p(proj), row, _p(proj[..., c:]), _p(proj[..., c + n :]), row]


class CycleScanFn(torch.autograd.Function):
    """The cycle-scan mix with gradients: forward and backward each one kernel call; see
    `fused_cycle_scan`. The forward keeps the step sizes and the state every `CHUNK` steps of
    the R-fold sequence; the backward recomputes each chunk's states from them."""

    @staticmethod
    def forward(ctx, u, proj, A, D, delta_bias, gamma, w):  # noqa: N803
        has_d, gamma_shape = D is not None, gamma.shape
        u, proj, A, D, bias, gamma = _cycle_inputs(u, proj, A, D, delta_bias, gamma)
        (b, length, c), n, r = u.shape, A.shape[1], gamma.shape[1]
        out = u.new_empty(b, length, c)
        delta = u.new_empty(b, length, c)
        ckpt = u.new_empty(b, math.ceil(r * length / CHUNK), -(-c // w), n, w)
        library().hrsam_cycle_scan_fwd(
            b, c, length, n, r, CHUNK, torch.get_num_threads(), w, *row_args(u, proj, n),
            _p(A), _p(D), _p(bias), _p(gamma), _p(out), _p(delta), _p(ckpt),
        )  # fmt: skip
        ctx.save_for_backward(u, proj, A, D, bias, gamma, delta, ckpt)
        ctx.has_d, ctx.gamma_shape, ctx.lanes = has_d, gamma_shape, w
        return out

    @staticmethod
    def backward(ctx, dout):
        u, proj, A, D, bias, gamma, delta, ckpt = ctx.saved_tensors
        (b, length, c), n, r = u.shape, A.shape[1], gamma.shape[1]
        threads = torch.get_num_threads()
        dout = _c(dout)
        du = torch.zeros_like(u, memory_format=torch.contiguous_format)
        dproj = proj.new_zeros(b, length, c + 2 * n)
        dA, dgamma = A.new_empty(b, c, n), A.new_empty(b, c, r)
        dD, dbias = A.new_empty(b, c), A.new_empty(b, c)
        dbc = u.new_zeros(threads, b, length, 2 * n)
        library().hrsam_cycle_scan_bwd(
            b, c, length, n, r, CHUNK, threads, ctx.lanes, *row_args(u, proj, n),
            _p(A), _p(D), _p(bias), _p(gamma), _p(delta), _p(ckpt), _p(dout), _p(du),
            _p(dproj), dproj.stride(1), _p(dA), _p(dD), _p(dbias), _p(dgamma), _p(dbc),
        )  # fmt: skip
        dproj[..., c:] = dbc.sum(0)
        dD = dD.sum(0) if ctx.has_d else None
        dgamma = dgamma.sum(0).view(ctx.gamma_shape)
        return du, dproj, dA.sum(0), dD, dbias.sum(0), dgamma, None


def fused_cycle_scan(
    u: torch.Tensor,
    proj: torch.Tensor,
    A: torch.Tensor,  # noqa: N803
    D: torch.Tensor | None,  # noqa: N803
    delta_bias: torch.Tensor,
    gamma: torch.Tensor,
    w: int | None = None,
) -> torch.Tensor:
    """The cycle-scan mix in one kernel call (and, with gradients, one for the backward).

    Args:
        u: (B, L, C) gated tokens (any row stride, unit channel stride).
        proj: (B, L, C + 2N) ``ssm_proj(u)``: raw step sizes, then B, then C of every token.
        A: (C, N) state matrix (negative).
        D: (C,) skip, or None.
        delta_bias: (C,) added to the step sizes before softplus.
        gamma: (C, R, 1) or (C, R) per-channel weights of the R cycles.
        w: channels per tile, 16 or 32; None: `lanes` of the state size.

    Returns:
        (B, L, C): ``sum_r gamma_r * scan_r`` with the sequence traversed R times in one scan.
        Nothing of the R-fold sequence is materialized: no repeated copies of u, dt, B, C in the
        forward, none of their gradients in the backward.
    """
    w = lanes(A.shape[1]) if w is None else w
    if w not in (16, 32):
        raise ValueError(f"w={w}: the cycle-scan kernels tile 16 or 32 channels")
    if torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (u, proj, A, D, delta_bias, gamma)
    ):
        return CycleScanFn.apply(u, proj, A, D, delta_bias, gamma, w)
    u, proj, A, D, bias, gamma = _cycle_inputs(u, proj, A, D, delta_bias, gamma)
    (b, length, c), n = u.shape, A.shape[1]
    out = u.new_empty(b, length, c)
    null = ctypes.c_void_p(None)
    library().hrsam_cycle_scan_fwd(
        b, c, length, n, gamma.shape[1], CHUNK, torch.get_num_threads(), w,
        *row_args(u, proj, n),
        _p(A), _p(D), _p(bias), _p(gamma), _p(out), null, null,
    )  # fmt: skip
    return out
