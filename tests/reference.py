"""Slow, independent references for the attention tests: dense attention over the whole padded
grid with an explicit mask, and RoPE written out pair by pair from the spec (A.4)."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def rope_explicit(x: Tensor, pos: Tensor) -> Tensor:
    """x (N, H, D), pos (N, 2) integer grid (row, col) -> rotated x, spec A.4 pair by pair."""
    d = x.shape[-1]
    out = x.clone()
    for m in range(d // 2):
        axis = 0 if m < d // 4 else 1
        k = m % (d // 4)
        freq = 10000.0 ** (-2 * k / (d // 2))
        ang = (0.5 * pos[:, axis].double() * freq).to(x.dtype)[:, None]
        c, s = ang.cos(), ang.sin()
        a, b = x[..., 2 * m], x[..., 2 * m + 1]
        out[..., 2 * m] = a * c + b * s
        out[..., 2 * m + 1] = b * c - a * s
    return out


def _cells(grid, ws, shifted, mode):
    """Cells of one padded grid: (token index or -1, row, col, group id) per cell."""
    h, w = grid
    big = h > ws or w > ws
    if mode == "global":
        top, ph, pw = 0, h, w
    elif mode == "swin":
        top = 0
        ph, pw = math.ceil(h / ws) * ws, math.ceil(w / ws) * ws
    else:  # padded windows: Ws/2 top/left when shifted
        top = ws // 2 if shifted and big else 0
        ph, pw = math.ceil((top + h) / ws) * ws, math.ceil((top + w) / ws) * ws
    cells = []
    for r in range(ph):
        for c in range(pw):
            rr, cc = r - top, c - top
            tok = rr * w + cc if 0 <= rr < h and 0 <= cc < w else -1
            if mode == "global":
                group = 0
            elif mode == "swin" and shifted and big:
                # Roll + Swin mask == windows of the grid shifted by Ws/2 (regions split at wrap).
                s = ws // 2
                group = ((r + s) // ws) * 10_000 + (c + s) // ws
            else:
                group = (r // ws) * 10_000 + c // ws
            cells.append((tok, r, c, group))
    return cells


def dense_reference(module, x: Tensor, grids, mode: str) -> Tensor:
    """Output of an `Attention` module computed densely over all padded cells of all scales.

    mode: "global", "padded" (window / shifted_pad / shifted_kv) or "swin".
    """
    b, length, dim = x.shape
    heads, hd = module.num_heads, module.head_dim
    pat = module.pattern
    shifted = pat.shifted and pat.name != "window"
    tokens, pos, groups = [], [], []
    offset = 0
    for si, grid in enumerate(grids):
        for tok, r, c, g in _cells(grid, pat.window_size, shifted, mode):
            tokens.append(tok + offset if tok >= 0 else -1)
            pos.append((r, c))
            groups.append((si, g))
        offset += grid[0] * grid[1]
    n = len(tokens)
    tok_t = torch.tensor(tokens)
    ext = torch.cat([x, module.padding.expand(b, 1, dim)], 1)
    cells = ext[:, torch.where(tok_t >= 0, tok_t, length)]  # (B, n, C)
    qkv = module.qkv(cells).view(b, n, 3, heads, hd)
    q, k, v = qkv.unbind(2)
    pos_t = torch.tensor(pos)
    if module.rope is not None:
        q = torch.stack([rope_explicit(q[i], pos_t) for i in range(b)])
        k = torch.stack([rope_explicit(k[i], pos_t) for i in range(b)])
    gid = torch.tensor([hash(g) for g in groups])
    allowed = gid[:, None] == gid[None, :]
    scores = torch.einsum("bqhd,bkhd->bhqk", q * module.scale, k)
    scores = scores.masked_fill(~allowed, float("-inf"))
    out = torch.einsum("bhqk,bkhd->bqhd", scores.softmax(-1), v).reshape(b, n, dim)
    real = tok_t >= 0
    order = torch.argsort(tok_t[real])
    return module.proj(out[:, real][:, order])
