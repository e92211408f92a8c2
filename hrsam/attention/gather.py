"""Token gathers along dim 1 whose backward is a scatter-add (or, for a permutation, a gather).

``x[:, index]`` through autograd's generic indexing backs up with ``index_put_(accumulate=True)``,
which on CPU is far slower than the forward gather: it serializes the accumulation. The window
plans (`hrsam.attention.windows`) know more: ``slots`` repeats only the pad row, and ``q_tokens``
and ``inverse`` are permutations of each other. `gather_rows` uses that: its backward is
``index_add_`` into zeros, or with ``inverse`` given a plain gather. Used by the KV-only padded
pattern (`shifted_kv`) whenever gradients are needed; inference keeps the plain indexing.

`split_qkv` does the same for the first split of the projected tokens into queries and
window keys/values. `generic_index_backward` switches back to plain indexing (the code before
this module) so that a benchmark can time both in one run.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import Tensor

_ENABLED = True


class _GatherRows(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, index: Tensor, inverse: Tensor | None) -> Tensor:
        ctx.rows = x.shape[1]
        ctx.save_for_backward(index, inverse)
        return x.index_select(1, index)

    @staticmethod
    def backward(ctx, grad: Tensor):
        index, inverse = ctx.saved_tensors
        if inverse is not None:  # a permutation: each row of x went to exactly one place
            return grad.index_select(1, inverse), None, None
        out = grad.new_zeros(grad.shape[0], ctx.rows, *grad.shape[2:])
        return out.index_add_(1, index, grad), None, None


class _SplitQKV(torch.autograd.Function):
    @staticmethod
    def forward(ctx, qkv: Tensor, slots: Tensor):
        ctx.shape = qkv.shape
        ctx.save_for_backward(slots)
        q = qkv[:, : qkv.shape[1] - 1, 0].contiguous()
        return q, qkv[:, :, 1:].index_select(1, slots)

    @staticmethod
    def backward(ctx, grad_q: Tensor, grad_kv: Tensor):
        (slots,) = ctx.saved_tensors
        out = grad_kv.new_zeros(ctx.shape)
        out[:, : ctx.shape[1] - 1, 0] = grad_q
        out[:, :, 1:].index_add_(1, slots, grad_kv)
        return out, None


def split_qkv(qkv: Tensor, slots: Tensor) -> tuple[Tensor, Tensor]:
    """Queries of the real tokens and keys/values of every window slot, from the projected
    tokens qkv (B, L + 1, 3, H, D) (row L: the pad token): q (B, L, H, D) and kv (B, M, 2, H, D)
    with ``kv[:, j] = qkv[:, slots[j], 1:]``. The backward writes both into one zero tensor (plain
    slicing would allocate and add a zero-filled qkv-sized gradient per slice)."""
    if not _ENABLED:
        return qkv[:, : qkv.shape[1] - 1, 0], qkv[:, slots, 1:]
    return _SplitQKV.apply(qkv, slots)


def gather_rows(x: Tensor, index: Tensor, inverse: Tensor | None = None) -> Tensor:
    """``x[:, index]`` for x (B, N, ...) and index (M,), with a scatter-add backward.

    Args:
        x: the tensor to gather from, along dim 1.
        index: (M,) rows of x, repeats allowed.
        inverse: when ``index`` is a permutation of ``range(N)``, its inverse
            (``inverse[index[j]] == j``): the backward is then a gather.
    """
    if not _ENABLED:
        return x[:, index]
    return _GatherRows.apply(x, index, inverse)


def scatter_backward_enabled() -> bool:
    """Whether `gather_rows` uses its own backward (the default)."""
    return _ENABLED


@contextlib.contextmanager
def generic_index_backward() -> Iterator[None]:
    """Within the block, `gather_rows` is plain indexing with autograd's generic backward."""
    global _ENABLED
    saved, _ENABLED = _ENABLED, False
    try:
        yield
    finally:
        _ENABLED = saved
