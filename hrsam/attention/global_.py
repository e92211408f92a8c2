"""``global``: every token attends to every token of its own scale (SAM's global blocks)."""

from __future__ import annotations

import torch

from hrsam.attention.base import Pattern, register_attention
from hrsam.attention.windows import grid_positions


@register_attention("global")
class GlobalAttention(Pattern):
    """Dense attention per scale; window size and shift are ignored. RoPE positions are grid
    indices (no padding), so a single window covering the grid gives the same result."""

    def attend(self, qkv, grids, kernel, rope, scale):
        length = sum(h * w for h, w in grids)
        q, k, v = qkv[:, :length].unbind(2)  # (B, L, H, D)
        if rope is not None:
            pos = grid_positions(grids, qkv.device)
            q, k = rope(q, pos), rope(k, pos)
        outs, start = [], 0
        for h, w in grids:
            sl = slice(start, start + h * w)
            o = kernel.attend(
                q[:, sl].transpose(1, 2), k[:, sl].transpose(1, 2), v[:, sl].transpose(1, 2), scale
            )
            outs.append(o.transpose(1, 2))
            start += h * w
        return torch.cat(outs, 1) if len(outs) > 1 else outs[0]
