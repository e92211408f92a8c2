"""Attention kernels: one call, one ``support()`` that says why a kernel cannot run.

Every kernel offers two calls:

* ``attend(q, k, v, scale, bias)``: dense attention over equal-length blocks,
  q (..., H, Lq, D), k and v (..., H, Lk, D), optional additive ``bias`` broadcastable to
  (..., H, Lq, Lk). Windows and batch live in the leading dims.
* ``attend_windows(q, k, v, plan, scale)``: KV-only padding (spec A.8): queries are the real tokens
  only, q (B, L, H, D) in raster order; keys/values are every slot of every window,
  k and v (B, nW, H, S, D). Returns (B, L, H, D) in raster order. The default groups windows by
  query count and runs ``attend`` once per group; varlen kernels (xformers, flash, flex) pack.

``math`` is the reference (explicit softmax, as the original Swin and SAM code compute it).
xformers and flash-attn are imported lazily; they are CUDA-only and say so.

``support(device, dtype, backward)`` is probed, not guessed (`hrsam.probe`): the reasons this
kernel cannot run this dtype on this device, else whether its package imports ("not installed" /
"installed but broken: <error>"), else a tiny real call of every entry point the kernel offers on
that device and dtype (cached per process), whose exception is "installed but broken: <error>".
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import itertools
import logging
import os
import warnings

import torch
import torch.nn.functional as F
from torch import Tensor

from hrsam.attention.gather import gather_rows, scatter_backward_enabled
from hrsam.attention.windows import WindowPlan, window_plan
from hrsam.probe import device_reasons, support_reasons
from hrsam.registry import Registry, UnknownNameError

log = logging.getLogger(__name__)

KERNELS: Registry[type[Kernel]] = Registry("kernel")
register_kernel = KERNELS.register

_FLOATS = (torch.float32, torch.bfloat16, torch.float16)


def _flat(t: Tensor) -> Tensor:
    """(..., H, L, D) -> (N, H, L, D)."""
    return t.reshape(-1, *t.shape[-3:])


def _flat_bias(bias: Tensor, q: Tensor, k: Tensor) -> Tensor:
    """Broadcasts an additive bias to (..., H|1, Lq, Lk) and flattens the leading dims."""
    heads = bias.shape[-3] if bias.dim() >= 3 else 1
    shape = (*q.shape[:-3], heads, q.shape[-2], k.shape[-2])
    return bias.broadcast_to(shape).reshape(-1, *shape[-3:])


class Kernel:
    """Base class: subclasses implement ``attend`` and may override ``attend_windows``."""

    name: str = ""
    supports_bias: bool = True
    # True if attend_windows runs all windows as one packed varlen call (flex, xformers, flash)
    # instead of grouping windows by query count over `attend`.
    packed: bool = False
    # the optional package this kernel imports (module to import, name users install)
    module: str | None = None
    package: str = ""

    def support(
        self, device: torch.device | str, dtype: torch.dtype, backward: bool = False
    ) -> list[str]:
        """Reasons this kernel cannot run on ``device`` in ``dtype`` (with a backward pass when
        ``backward``); empty when a tiny real call of it ran there (cached per process)."""
        return support_reasons(
            self.static_reasons(device, dtype, backward),
            self.module,
            self.package or (self.name if self.module else f"kernel {self.name}"),
            ("kernel", self.name, str(torch.device(device)), dtype, bool(backward)),
            lambda: self.probe(device, dtype, backward),
        )

    def static_reasons(self, device, dtype, backward: bool = False) -> list[str]:
        """What rules out this device or dtype before anything is imported or called."""
        reasons = device_reasons(device)
        if dtype not in _FLOATS:
            reasons.append(f"dtype {dtype} is not a float type")
        return reasons

    def probe(self, device, dtype, backward: bool = False) -> None:
        """A tiny real call of ``attend`` (with a bias when the kernel takes one) and of
        ``attend_windows`` on ``device`` in ``dtype``; raises what the library raises."""
        device = torch.device(device)
        gen = torch.Generator().manual_seed(0)

        def rand(*shape):
            t = torch.randn(*shape, generator=gen).to(device, dtype)
            return t.requires_grad_(backward)

        scale = 32**-0.5
        outs = []
        with torch.set_grad_enabled(backward):
            q, k, v = (rand(1, 2, 2, 16, 32) for _ in range(3))  # (B, windows, H, L, D)
            outs.append(self.attend(q, k, v, scale))
            if self.supports_bias:  # Swin's (windows, 1, S, S) mask, as the swin pattern passes
                bias = torch.zeros(2, 1, 16, 16, device=device, dtype=dtype)
                outs.append(self.attend(q, k, v, scale, bias=bias))
            plan = window_plan([(6, 6)], 4, True, device)  # windows of 4 to 16 queries
            qw = rand(1, plan.num_tokens, 2, 32)
            kw, vw = (rand(1, plan.num_windows, 2, 16, 32) for _ in range(2))
            outs.append(self.attend_windows(qw, kw, vw, plan, scale))
            if backward:
                sum(o.float().sum() for o in outs).backward()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        for o in outs:
            if not torch.isfinite(o.float()).all():
                raise RuntimeError(f"{self.name} returned non-finite values")

    def attend(
        self, q: Tensor, k: Tensor, v: Tensor, scale: float, bias: Tensor | None = None
    ) -> Tensor:
        raise NotImplementedError

    def attend_windows(
        self, q: Tensor, k: Tensor, v: Tensor, plan: WindowPlan, scale: float
    ) -> Tensor:
        b, length_q, h, d = q.shape
        grad = torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad)
        if grad and scatter_backward_enabled():
            return self._attend_windows_grad(q, k, v, plan, scale)
        packed = q[:, plan.q_tokens]  # (B, L, H, D) in window order
        out = q.new_empty(b, length_q, h, d)
        start = 0
        for w0, w1, length in plan.groups:
            n = w1 - w0
            stop = start + n * length
            qg = packed[:, start:stop].view(b, n, length, h, d).transpose(2, 3)
            og = self.attend(qg, k[:, w0:w1], v[:, w0:w1], scale)  # (B, n, H, l, D)
            # Scatter straight to raster order (a view when the kernel returns (.., l, H, D)).
            out[:, plan.q_tokens[start:stop]] = og.transpose(2, 3).reshape(b, n * length, h, d)
            start = stop
        return out

    def _attend_windows_grad(self, q, k, v, plan, scale):
        """`attend_windows` for training: the permutations to window order and back are
        `gather_rows` with their inverses, so both backward passes are gathers too."""
        b, _, h, d = q.shape
        packed = gather_rows(q, plan.q_tokens, plan.inverse)  # (B, L, H, D) in window order
        # split, not slices: the backward of a split concatenates, that of a slice zero-fills a
        # tensor of the whole input's size per slice
        counts = [w1 - w0 for w0, w1, _ in plan.groups]
        qs = packed.split([(w1 - w0) * length for w0, w1, length in plan.groups], 1)
        outs = []
        for qg, kg, vg, n, (_, _, length) in zip(
            qs, k.split(counts, 1), v.split(counts, 1), counts, plan.groups, strict=True
        ):
            qg = qg.view(b, n, length, h, d).transpose(2, 3)
            og = self.attend(qg, kg, vg, scale)  # (B, n, H, l, D)
            outs.append(og.transpose(2, 3).reshape(b, n * length, h, d))
        out = outs[0] if len(outs) == 1 else torch.cat(outs, 1)
        return gather_rows(out, plan.inverse, plan.q_tokens)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


@register_kernel("math")
class MathKernel(Kernel):
    """Explicit ``softmax(q k^T * scale + bias) v`` in the input dtype: the reference."""

    def attend(self, q, k, v, scale, bias=None):
        attn = (q * scale) @ k.transpose(-2, -1)
        if bias is not None:
            attn = attn + bias.to(attn.dtype)
        return attn.softmax(-1) @ v


@register_kernel("sdpa")
class SdpaKernel(Kernel):
    """PyTorch ``scaled_dot_product_attention`` (CPU flash kernel, or flash/efficient/cuDNN)."""

    def attend(self, q, k, v, scale, bias=None):
        lead = q.shape[:-3]
        mask = None if bias is None else _flat_bias(bias.to(q.dtype), q, k)
        out = F.scaled_dot_product_attention(
            _flat(q), _flat(k), _flat(v), attn_mask=mask, scale=scale
        )
        return out.view(*lead, *out.shape[1:])


def _flex_module():
    return importlib.import_module("torch.nn.attention.flex_attention")


def _eager_flex(*args, **kwargs):
    # Eager FlexAttention warns that it materializes the scores; that is the point of eager mode.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return _flex_module().flex_attention(*args, **kwargs)


@functools.lru_cache(maxsize=1)
def _compiled_flex():
    # One specialization per (windows, heads, length) shape: a sweep over grids and patterns
    # easily passes dynamo's default of 8, after which it would silently fall back to eager.
    import torch._dynamo

    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 256)
    return torch.compile(_flex_module().flex_attention, dynamic=False)


@register_kernel("flex")
class FlexKernel(Kernel):
    """FlexAttention: windows as the batch, Swin's mask as a ``score_mod``, KV-only padding as a
    block-diagonal ``block_mask`` over packed windows.

    Compiled by default (eager FlexAttention materializes the full score matrix). Set
    ``HRSAM_FLEX_COMPILE=0`` to run eager, which is only sensible for small inputs (tests).
    """

    packed = True
    _eager_only = False  # set while probing on CPU: compiling there takes seconds per shape

    def static_reasons(self, device, dtype, backward=False):
        reasons = super().static_reasons(device, dtype, backward)
        if importlib.util.find_spec("torch.nn.attention.flex_attention") is None:
            reasons.append(f"torch {torch.__version__} has no FlexAttention")
            return reasons
        dev = torch.device(device).type
        if dev == "cpu" and backward:
            reasons.append("FlexAttention has no backward on CPU (forward only)")
        if dev not in ("cpu", "cuda"):
            reasons.append(f"FlexAttention does not run on {dev}")
        return reasons

    def _fn(self):
        if self._eager_only or os.environ.get("HRSAM_FLEX_COMPILE", "1") == "0":
            return _eager_flex
        return _compiled_flex()

    def probe(self, device, dtype, backward=False):
        # On CPU the probe runs eagerly (compiling takes seconds per shape there); on CUDA it
        # runs what the trials run, compiled unless HRSAM_FLEX_COMPILE=0.
        self._eager_only = torch.device(device).type == "cpu"
        try:
            super().probe(device, dtype, backward)
        finally:
            self._eager_only = False

    def attend(self, q, k, v, scale, bias=None):
        lead = q.shape[:-3]
        score_mod = None
        if bias is not None:
            flat_bias = _flat_bias(bias.to(q.dtype), q, k)
            per_head = flat_bias.shape[1] > 1

            def score_mod(score, b, h, qi, ki):
                return score + flat_bias[b, h if per_head else 0, qi, ki]

        out = self._fn()(_flat(q), _flat(k), _flat(v), score_mod=score_mod, scale=scale)
        return out.view(*lead, *out.shape[1:])

    def attend_windows(self, q, k, v, plan, scale):
        b, _, h, d = q.shape
        s = k.shape[-2]
        qp = q[:, plan.q_tokens].transpose(1, 2)  # (B, H, L, D) window order
        kp = k.transpose(2, 3).reshape(b, -1, h, d).transpose(1, 2)  # (B, H, nW * S, D)
        vp = v.transpose(2, 3).reshape(b, -1, h, d).transpose(1, 2)
        out = self._fn()(qp, kp, vp, block_mask=_doc_block_mask(plan, s), scale=scale)
        return out.transpose(1, 2)[:, plan.inverse]


@functools.lru_cache(maxsize=32)
def _doc_block_mask(plan: WindowPlan, s: int, block: int = 128):
    """Block-diagonal mask: packed query i attends the S slots of its own window.

    Built from block indices (which 128 x 128 tiles can hold a same-window pair) so nothing of
    size queries x keys is ever materialized; ``mask_mod`` refines the partial tiles.
    """
    flex = _flex_module()
    device = plan.q_lengths.device
    n_q, n_kv = plan.num_tokens, plan.num_windows * s
    q_win = torch.repeat_interleave(torch.arange(plan.num_windows, device=device), plan.q_lengths)
    kv_win = torch.arange(plan.num_windows, device=device).repeat_interleave(s)

    def same_window(b, h, qi, ki):
        return q_win[qi] == kv_win[ki]

    nqb, nkb = -(-n_q // block), -(-n_kv // block)
    padded = torch.cat([q_win, q_win[-1:].expand(nqb * block - n_q)]).view(nqb, block)
    q_lo, q_hi = padded.min(1).values, padded.max(1).values
    starts = torch.arange(nkb, device=device) * block
    k_lo = starts // s
    k_hi = ((starts + block - 1) // s).clamp_max(plan.num_windows - 1)
    touch = (k_lo[None] <= q_hi[:, None]) & (k_hi[None] >= q_lo[:, None])  # (nqb, nkb)
    counts = touch.sum(1).to(torch.int32)
    order = torch.argsort((~touch).to(torch.int8), dim=1, stable=True).to(torch.int32)
    return flex.BlockMask.from_kv_blocks(
        counts[None, None],
        order[None, None],
        BLOCK_SIZE=block,
        mask_mod=same_window,
        seq_lengths=(n_q, n_kv),
    )


def _cuda_reasons(device, name: str) -> list[str]:
    if torch.device(device).type != "cuda":
        return [f"{name} runs on CUDA only (device is {torch.device(device).type})"]
    return []


@register_kernel("xformers")
class XformersKernel(Kernel):
    """xformers ``memory_efficient_attention``; KV-only padding via ``BlockDiagonalMask``
    (the kernel the official HRSAM code uses, spec A.7)."""

    packed = True
    module, package = "xformers.ops", "xformers"

    def static_reasons(self, device, dtype, backward=False):
        return super().static_reasons(device, dtype, backward) + _cuda_reasons(device, "xformers")

    @staticmethod
    def _ops():
        return importlib.import_module("xformers.ops")

    def attend(self, q, k, v, scale, bias=None):
        lead = q.shape[:-3]
        # xformers layout is (B, M, H, K)
        qx, kx, vx = (_flat(t).transpose(1, 2) for t in (q, k, v))
        attn_bias = None
        if bias is not None:
            heads = q.shape[-3]
            flat = aligned_bias(_flat_bias(bias.to(q.dtype), q, k))
            attn_bias = flat.expand(-1, heads, -1, -1)
        out = self._ops().memory_efficient_attention(qx, kx, vx, attn_bias=attn_bias, scale=scale)
        out = out.transpose(1, 2)
        return out.reshape(*lead, *out.shape[1:])

    def attend_windows(self, q, k, v, plan, scale):
        b, length, h, d = q.shape
        s = k.shape[-2]
        mask = _block_diagonal_mask(plan, b, s, q.device)
        qp = q[:, plan.q_tokens].reshape(1, b * length, h, d)
        kp = k.transpose(2, 3).reshape(1, -1, h, d)
        vp = v.transpose(2, 3).reshape(1, -1, h, d)
        out = self._ops().memory_efficient_attention(qp, kp, vp, attn_bias=mask, scale=scale)
        return out.view(b, length, h, d)[:, plan.inverse]


def aligned_bias(bias: Tensor, multiple: int = 8) -> Tensor:
    """``bias`` (N, H, Lq, Lk) as a view whose strides but the last are multiples of ``multiple``.

    xformers' memory-efficient kernels read an additive bias in aligned rows and refuse one whose
    row stride is not a multiple of 8 in half precision: SAM's 14 x 14 windows give 196. The
    bias is copied into zero-padded rows of a multiple of 8 and sliced back to Lk, the layout
    the xformers documentation recommends."""
    lk = bias.shape[-1]
    strides_ok = all(st % multiple == 0 for st in bias.stride()[:-1])
    if strides_ok and bias.stride(-1) == 1:
        return bias
    padded = bias.new_zeros(*bias.shape[:-1], -(-lk // multiple) * multiple)
    padded[..., :lk] = bias
    return padded[..., :lk]


def _from_seqlens_takes_device(cls) -> bool:
    import inspect

    return "device" in inspect.signature(cls.from_seqlens).parameters


@functools.lru_cache(maxsize=64)
def _block_diagonal_mask(plan: WindowPlan, b: int, s: int, device: torch.device):
    """xformers' BlockDiagonalMask of a plan's windows for ``b`` items, built once per shape on
    the tensors' device from host-side lengths (no device-to-host read per layer)."""
    cls = importlib.import_module("xformers.ops.fmha").attn_bias.BlockDiagonalMask
    q_lens = list(plan.q_counts) * b
    kwargs = {"device": device} if _from_seqlens_takes_device(cls) else {}
    return cls.from_seqlens(q_seqlen=q_lens, kv_seqlen=[s] * len(q_lens), **kwargs)


@functools.lru_cache(maxsize=64)
def _cu_seqlens(plan: WindowPlan, b: int, s: int, device: torch.device):
    """(cu_q, cu_k, max_q) of flash-attn's varlen call, built once per shape from host-side
    lengths (``int(tensor.max())`` would wait for the device in every layer)."""
    q_lens = list(plan.q_counts) * b
    cu_q = torch.tensor([0, *itertools.accumulate(q_lens)], dtype=torch.int32, device=device)
    cu_k = torch.arange(0, (len(q_lens) + 1) * s, s, dtype=torch.int32, device=device)
    return cu_q, cu_k, max(q_lens)


@register_kernel("flash")
class FlashKernel(Kernel):
    """flash-attn 2 (``flash_attn_func`` / ``flash_attn_varlen_func``); fp16/bf16, no bias."""

    packed = True
    supports_bias = False
    module, package = "flash_attn", "flash-attn"

    def static_reasons(self, device, dtype, backward=False):
        reasons = super().static_reasons(device, dtype, backward)
        reasons += _cuda_reasons(device, "flash-attn")
        if dtype not in (torch.float16, torch.bfloat16):
            reasons.append(f"flash-attn needs float16 or bfloat16, not {dtype}")
        return reasons

    @staticmethod
    def _fa():
        return importlib.import_module("flash_attn")

    def attend(self, q, k, v, scale, bias=None):
        if bias is not None:
            raise ValueError("the flash kernel cannot apply an additive bias (Swin's mask)")
        lead = q.shape[:-3]
        qf, kf, vf = (_flat(t).transpose(1, 2) for t in (q, k, v))  # (N, L, H, D)
        out = self._fa().flash_attn_func(qf, kf, vf, softmax_scale=scale).transpose(1, 2)
        return out.reshape(*lead, *out.shape[1:])

    def attend_windows(self, q, k, v, plan, scale):
        b, length, h, d = q.shape
        s = k.shape[-2]
        cu_q, cu_k, max_q = _cu_seqlens(plan, b, s, q.device)
        qp = q[:, plan.q_tokens].reshape(b * length, h, d)
        kp = k.transpose(2, 3).reshape(-1, h, d)
        vp = v.transpose(2, 3).reshape(-1, h, d)
        out = self._fa().flash_attn_varlen_func(
            qp, kp, vp, cu_q, cu_k, max_q, s, softmax_scale=scale
        )
        return out.view(b, length, h, d)[:, plan.inverse]


def list_kernels(pattern: str = "*") -> list[str]:
    """Registered kernel names."""
    return KERNELS.names(pattern)


def get_kernel(name: str) -> Kernel:
    """A kernel instance by name; an unknown name lists the valid ones (``auto`` is not a kernel
    but a request: `resolve_kernel` turns it into one)."""
    if name == AUTO:
        raise ValueError(
            "kernel 'auto' must be resolved for a device first (resolve_kernel); "
            f"kernels: {', '.join(list_kernels())}"
        )
    return KERNELS.get(name)()


# -- auto: the fastest exact kernel a device runs ----------------------------------------------

AUTO = "auto"
# Fastest first, per device type; every one computes softmax(q k^T * scale + bias) v exactly
# (no approximation), so `auto` changes speed, never the function. ``flex`` is left out (eager it
# materializes the scores, compiled it costs seconds per shape) and ``math`` is the reference that
# every device runs, the last resort.
AUTO_ORDER = {"cuda": ("flash", "xformers", "sdpa"), "cpu": ("sdpa",)}


def check_kernel_name(name: str) -> str:
    """``name`` when it is a registered kernel or ``auto``; else the one-line error listing both."""
    if name != AUTO and name not in KERNELS:
        valid = ", ".join([*list_kernels(), AUTO])
        raise UnknownNameError(f"unknown kernel {name!r}; valid: {valid}")
    return name


def resolve_kernel(
    name: str,
    device: torch.device | str,
    dtype: torch.dtype = torch.float32,
    *,
    needs_bias: bool = False,
    backward: bool = False,
) -> str:
    """The kernel that runs for ``name``: a named kernel as it is; ``auto`` the first kernel of
    `AUTO_ORDER` for the device's type whose probe (`Kernel.support`: a tiny real call on
    ``device`` in ``dtype``, with a backward pass when ``backward``) succeeds and that applies an
    additive bias when ``needs_bias`` (SAM's relative positions, Swin's mask); else ``math``.

    The same rule for every model family: the result depends only on the device, the dtype, the
    backward and whether the caller adds a bias."""
    if name != AUTO:
        return check_kernel_name(name)
    for candidate in AUTO_ORDER.get(torch.device(device).type, ()):
        kernel = get_kernel(candidate)
        if needs_bias and not kernel.supports_bias:
            continue
        if not kernel.support(device, dtype, backward):
            return candidate
    return "math"
