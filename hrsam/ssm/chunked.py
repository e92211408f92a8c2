"""The ``chunked`` selective scan: plain PyTorch on any device, memory bounded by one chunk.

The sequence is cut into chunks of ``T`` steps. Inside a chunk the linear recurrence
``h_t = a_t h_{t-1} + b_t`` (``a_t = exp(dt_t A)``, ``b_t = dt_t u_t B_t``, all (B, D, N)) is a
Hillis-Steele parallel scan: log2(T) rounds of ``b_t += a_t b_{t-k}``, ``a_t *= a_{t-k}``, which
leave ``b_t`` the state from a zero start and ``a_t`` the product of the chunk's decays up to t,
so ``h_t = b_t + a_t h_carry``. Every factor is a decay in (0, 1]: no division, no overflow (unlike
a cumulative-sum-of-logs formulation). The chunk's last state is carried to the next chunk.

Nothing of size (L, D, N) exists at any time: the forward keeps only the state entering each chunk
(L / T x D x N); the backward walks the chunks from last to first, recomputes one chunk under
autograd from its entering state and propagates the gradient of that state backwards (gradient
checkpointing per chunk). Chunks cost a handful of kernel launches each, so on CUDA this is
thousands of times faster than ``ref``'s one step per position, though slower than a fused kernel.
"""

from __future__ import annotations

import torch
from torch import Tensor

CHUNK = 128


def _chunk(u, dt, A, B, C, h0):  # noqa: N803
    """One chunk. u, dt (b, d, T); A (d, N); B, C (b, N, T); h0 (b, d, N).

    Returns y (b, d, T) without the skip term and the last state (b, d, N)."""
    a = torch.exp(dt[..., None] * A[:, None, :])  # (b, d, T, N)
    x = (dt * u)[..., None] * B.transpose(1, 2)[:, None]  # (b, d, T, N)
    t = a.shape[2]
    k = 1
    while k < t:
        x = torch.cat([x[:, :, :k], x[:, :, k:] + a[:, :, k:] * x[:, :, :-k]], 2)
        a = torch.cat([a[:, :, :k], a[:, :, k:] * a[:, :, :-k]], 2)
        k *= 2
    h = x + a * h0[:, :, None]
    y = (h * C.transpose(1, 2)[:, None]).sum(-1)  # (b, d, T)
    return y, h[:, :, -1].clone()  # a view would keep the whole chunk alive with the state


class ChunkedScanFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, dt, A, B, C, chunk):  # noqa: N803
        b, d, length = u.shape
        h = u.new_zeros(b, d, A.shape[1])
        states, ys = [], []
        for s in range(0, length, chunk):
            e = min(s + chunk, length)
            states.append(h)
            y, h = _chunk(u[..., s:e], dt[..., s:e], A, B[..., s:e], C[..., s:e], h)
            ys.append(y)
        ctx.save_for_backward(u, dt, A, B, C, *states)
        ctx.chunk = chunk
        return torch.cat(ys, -1)

    @staticmethod
    def backward(ctx, gy):
        u, dt, A, B, C, *states = ctx.saved_tensors
        chunk, length = ctx.chunk, u.shape[-1]
        du, ddt, dB, dC = (torch.empty_like(t) for t in (u, dt, B, C))
        dA = torch.zeros_like(A)
        gh = torch.zeros_like(states[0])
        starts = list(range(0, length, chunk))
        for i in reversed(range(len(starts))):
            s = starts[i]
            e = min(s + chunk, length)
            with torch.enable_grad():
                ins = [
                    t.detach().requires_grad_()
                    for t in (u[..., s:e], dt[..., s:e], A, B[..., s:e], C[..., s:e], states[i])
                ]
                y, h_last = _chunk(*ins)
                grads = torch.autograd.grad((y, h_last), ins, (gy[..., s:e], gh))
            du[..., s:e], ddt[..., s:e], ga, dB[..., s:e], dC[..., s:e], gh = grads
            dA += ga
        return du, ddt, dA, dB, dC, None


def chunked_scan(
    u: Tensor,
    delta: Tensor,
    A: Tensor,  # noqa: N803
    B: Tensor,  # noqa: N803
    C: Tensor,  # noqa: N803
    D: Tensor | None = None,  # noqa: N803
    chunk: int = CHUNK,
) -> Tensor:
    """The selective scan (`hrsam.ssm.scan` semantics, delta already biased and activated).

    Args:
        u, delta: (B, D, L) float32.
        A: (D, N). B, C: (B, N, L). D: (D,) or None.
        chunk: steps per chunk (memory per chunk: B x D x chunk x N floats, a few times).

    Returns:
        y (B, D, L).
    """
    if chunk < 1:
        raise ValueError(f"chunk={chunk} must be >= 1")
    y = ChunkedScanFn.apply(u, delta, A, B, C, chunk)
    if D is not None:
        y = y + D[:, None] * u
    return y
