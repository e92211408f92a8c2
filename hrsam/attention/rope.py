"""2-D rotary position embedding on q and k (HRSAM spec A.4).

Half of the head dimension encodes the row, half the column. Frequencies
``f_k = base ** (-2k / (head_dim / 2))`` for ``k < head_dim / 4``, each repeated twice
(interleaved), positions scaled by 0.5 (``pos = 0.5 * grid index``). Pairs of adjacent channels
rotate with the official sign convention::

    x'[2m]   = x[2m]   * cos + x[2m+1] * sin
    x'[2m+1] = x[2m+1] * cos - x[2m]   * sin

which is the opposite sign of EVA-02's; it matters when loading official weights.
"""

from __future__ import annotations

import torch
from torch import Tensor


class Rope2d:
    """Rotary tables and rotation for one head dimension.

    Args:
        head_dim: channels per head; must be divisible by 4.
        base: frequency base.
        pos_scale: multiplies the integer grid index (0.5 in HRSAM).
    """

    def __init__(self, head_dim: int, base: float = 10000.0, pos_scale: float = 0.5) -> None:
        if head_dim % 4:
            raise ValueError(f"RoPE needs head_dim divisible by 4, got head_dim={head_dim}")
        self.head_dim = head_dim
        self.base = base
        self.pos_scale = pos_scale

    def freqs(self) -> Tensor:
        """(head_dim // 4,) frequencies of one axis."""
        return _freqs(self.head_dim, self.base)

    def __call__(self, x: Tensor, positions: Tensor) -> Tensor:
        """Rotates ``x`` (..., N, H, D) at (N, 2) (row, col) ``positions``."""
        return self.rotate(x, self.table(positions, x.dtype))

    def table(self, positions: Tensor, dtype: torch.dtype) -> Tensor:
        """The (cached) rotation table of (N, 2) ``positions`` for ``dtype``; slicing its first
        dim gives the table of a slice of the positions."""
        return _table(positions, self.head_dim, self.base, self.pos_scale, dtype)

    @staticmethod
    def rotate(x: Tensor, table: Tensor) -> Tensor:
        """Rotates ``x`` (..., N, H, D) by a `table` of N positions."""
        if table.is_complex():
            # (x0 + i x1) * (cos - i sin) = (x0 cos + x1 sin) + i (x1 cos - x0 sin): one fused op.
            out = torch.view_as_complex(x.unflatten(-1, (-1, 2))) * table
            return torch.view_as_real(out).flatten(-2)
        cos, sin = table.unbind(-1)
        x0, x1 = x.unflatten(-1, (-1, 2)).unbind(-1)
        return torch.stack([x0 * cos + x1 * sin, x1 * cos - x0 * sin], -1).flatten(-2)


# Keyed by the positions tensor's identity: plans are cached, so their tensors are long-lived;
# the entry keeps the tensor alive so its id cannot be reused while it is cached.
_CACHE: dict[tuple, tuple[Tensor, Tensor]] = {}
_CACHE_SIZE = 256


def _table(positions: Tensor, head_dim: int, base: float, pos_scale: float, dtype: torch.dtype):
    """(N, 1, head_dim // 2) complex ``cos - i sin`` for float32/64, else real (..., 2) pairs."""
    key = (id(positions), head_dim, base, pos_scale, dtype)
    hit = _CACHE.get(key)
    if hit is not None and hit[0] is positions:
        return hit[1]
    freqs = _freqs(head_dim, base).to(positions.device)
    pos = positions.double() * pos_scale
    ang = torch.cat([pos[:, :1] * freqs, pos[:, 1:] * freqs], -1).unsqueeze(1)  # (N, 1, D/2)
    if dtype in (torch.float32, torch.float64):
        table = torch.polar(torch.ones_like(ang), -ang).to(
            torch.complex64 if dtype == torch.float32 else torch.complex128
        )
    else:
        table = torch.stack([ang.cos(), ang.sin()], -1).to(dtype)
    if len(_CACHE) >= _CACHE_SIZE:
        _CACHE.pop(next(iter(_CACHE)))
    _CACHE[key] = (positions, table)
    return table


def _freqs(head_dim: int, base: float) -> Tensor:
    axis = head_dim // 2
    return base ** (-torch.arange(0, axis, 2, dtype=torch.float64) / axis)
