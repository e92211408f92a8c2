"""``swin``: traditional Swin attention, the baseline Flash Swin is measured against (spec A.8).

As the original Swin Transformer computes it: pad the grid bottom/right to whole windows, cyclic
roll by -Ws/2, partition into windows, attend with an additive mask (-100) that separates regions
the roll brought together, reverse the partition and the roll. Border windows of shifted blocks
therefore have fewer effective keys than Ws^2, unlike the padded patterns. Pad cells hold the
learnable pad token (zero-initialized, so Swin's zero padding at init).
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

from hrsam.attention.base import Pattern, register_attention
from hrsam.attention.windows import padded_shape, shift_applies

MASK_VALUE = -100.0  # what the Swin code adds to scores across regions


@functools.lru_cache(maxsize=32)
def swin_mask(ph: int, pw: int, ws: int, shift: int, device: str) -> Tensor:
    """(nW, 1, S, S) additive mask of Swin's shifted windows on a ph x pw padded grid."""
    labels = torch.zeros(ph, pw)
    bounds = (slice(0, -ws), slice(-ws, -shift), slice(-shift, None))
    for i, hs in enumerate(bounds):
        for j, wsl in enumerate(bounds):
            labels[hs, wsl] = i * 3 + j
    win = labels.view(ph // ws, ws, pw // ws, ws).transpose(1, 2).reshape(-1, ws * ws)
    mask = (win[:, None, :] != win[:, :, None]).float() * MASK_VALUE
    return mask.unsqueeze(1).to(device)


def _partition(t: Tensor, ws: int) -> Tensor:
    """(B, PH, PW, ...) -> (B, nW, S, ...)."""
    b, ph, pw = t.shape[:3]
    rest = t.shape[3:]
    t = t.view(b, ph // ws, ws, pw // ws, ws, *rest).transpose(2, 3)
    return t.reshape(b, (ph // ws) * (pw // ws), ws * ws, *rest)


def _unpartition(t: Tensor, ws: int, ph: int, pw: int) -> Tensor:
    """(B, nW, S, ...) -> (B, PH, PW, ...)."""
    b = t.shape[0]
    rest = t.shape[3:]
    t = t.view(b, ph // ws, pw // ws, ws, ws, *rest).transpose(2, 3)
    return t.reshape(b, ph, pw, *rest)


@register_attention("swin")
class SwinAttention(Pattern):
    """Cyclic-roll shifted windows with an additive mask; plain windows when not ``shifted``."""

    needs_bias = True

    def attend(self, qkv, grids, kernel, rope, scale):
        b, _, _, h, d = qkv.shape
        ws = self.window_size
        pad_row = qkv[:, -1]  # (B, 3, H, D)
        outs, start = [], 0
        for grid in grids:
            gh, gw = grid
            shifted = self.shifted and shift_applies(grid, ws, self.shift_rule)
            shift = ws // 2 if shifted else 0
            _, ph, pw = padded_shape(grid, ws, False)
            t = qkv[:, start : start + gh * gw].view(b, gh, gw, 3, h, d)
            if (ph, pw) != (gh, gw):
                full = pad_row[:, None, None].expand(b, ph, pw, 3, h, d).clone()
                full[:, :gh, :gw] = t
                t = full
            q, k, v = t.unbind(3)  # (B, PH, PW, H, D)
            if rope is not None:
                pos = _positions(ph, pw, str(qkv.device))
                q = rope(q.reshape(b, ph * pw, h, d), pos).view(b, ph, pw, h, d)
                k = rope(k.reshape(b, ph * pw, h, d), pos).view(b, ph, pw, h, d)
            if shift:
                q, k, v = (torch.roll(x, (-shift, -shift), (1, 2)) for x in (q, k, v))
            q, k, v = (_partition(x, ws).transpose(2, 3) for x in (q, k, v))  # (B, nW, H, S, D)
            mask = swin_mask(ph, pw, ws, shift, str(qkv.device)) if shift else None
            o = kernel.attend(q, k, v, scale, bias=mask)
            o = _unpartition(o.transpose(2, 3), ws, ph, pw)  # (B, PH, PW, H, D)
            if shift:
                o = torch.roll(o, (shift, shift), (1, 2))
            outs.append(o[:, :gh, :gw].reshape(b, gh * gw, h, d))
            start += gh * gw
        return torch.cat(outs, 1) if len(outs) > 1 else outs[0]


@functools.lru_cache(maxsize=32)
def _positions(ph: int, pw: int, device: str) -> Tensor:
    rows, cols = torch.meshgrid(torch.arange(ph), torch.arange(pw), indexing="ij")
    return torch.stack([rows, cols], -1).reshape(-1, 2).float().to(device)
