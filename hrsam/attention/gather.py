"""Token gathers along dim 1 whose backward is a scatter-add (or, for a permutation, a gather).

``x[:, index]`` through autograd's generic indexing backs up with ``index_put_(accumulate=True)``,
which on CPU is far slower than the forward gather: it serializes the accumulation. The window
plans (`hrsam.attention.windows`) know more: ``slots`` repeats only the pad row, and ``q_tokens``
and ``inverse`` are permutations of each other. `gather_rows` uses that: its backward is
``index_add_`` into zeros, or with ``inverse`` given a plain gather. Used by the KV-only padded
pattern (`shifted_kv`) whenever gradients are needed; inference keeps the plain indexing.

`split_qkv` does the same for the first split of the projected tokens into queries and window
keys/values, using that every real token fills exactly one slot: its backward gathers, and only
the pad row sums. `generic_index_backward` switches back to plain indexing (the code before this
module) so that a benchmark can time both in one run.
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
    def forward(ctx, qkv: Tensor, slots: Tensor, token_slot: Tensor, pad_slots: Tensor):
        ctx.shape = qkv.shape
        ctx.save_for_backward(token_slot, pad_slots)
        q = qkv[:, : qkv.shape[1] - 1, 0].contiguous()
        # k and v apart: one (B, M, 2, H, D) buffer is twice the size, and above glibc's 32 MB
        # mmap threshold a fresh buffer page-faults on every call
        return q, qkv[:, :, 1].index_select(1, slots), qkv[:, :, 2].index_select(1, slots)

    @staticmethod
    def backward(ctx, grad_q: Tensor, grad_k: Tensor, grad_v: Tensor):
        token_slot, pad = ctx.saved_tensors
        length = ctx.shape[1] - 1
        # Every real token sits in exactly one slot: its k/v gradient is a gather, not an
        # accumulation; only the pad row sums over its slots. No zero fill, no index_add_.
        ref = next(g for g in (grad_q, grad_k, grad_v) if g is not None)
        out = ref.new_empty(ctx.shape)
        out[:, :length, 0] = 0 if grad_q is None else grad_q
        out[:, length, 0] = 0
        for i, g in ((1, grad_k), (2, grad_v)):
            if g is None:
                out[:, :, i] = 0
                continue
            out[:, :length, i] = g.index_select(1, token_slot)
            out[:, length, i] = g.index_select(1, pad).sum(1) if len(pad) else 0
        return out, None, None, None


def split_qkv(qkv: Tensor, plan) -> tuple[Tensor, Tensor, Tensor]:
    """Queries of the real tokens and keys and values of every window slot of ``plan`` (a
    `hrsam.attention.windows.WindowPlan`), from the projected tokens qkv (B, L + 1, 3, H, D)
    (row L: the pad token): q (B, L, H, D), k and v (B, M, H, D) with
    ``k[:, j] = qkv[:, plan.slots[j], 1]``. The slots hold each real token exactly once
    (``plan.token_slot``) and the pad row at ``plan.pad_slots``, so the backward gathers the real
    rows' gradients and sums the pad row's, straight into one uninitialized tensor, with no
    host sync."""
    slots = plan.slots
    if not _ENABLED:
        return qkv[:, : qkv.shape[1] - 1, 0], qkv[:, slots, 1], qkv[:, slots, 2]
    return _SplitQKV.apply(qkv, slots, plan.token_slot, plan.pad_slots)


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
