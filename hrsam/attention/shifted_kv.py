"""``shifted_kv``: HRSAM v2 "Flash Swin" with KV-only padding (spec A.8).

The same padded window partition as ``shifted_pad``, but only real tokens are queries: each window
has a variable number of queries and exactly Ws^2 keys/values (pad slots hold the learnable pad
token). Real-token outputs equal ``shifted_pad``'s; pad-query compute is skipped.
"""

from __future__ import annotations

import torch
from torch import Tensor

from hrsam.attention.base import Pattern, register_attention
from hrsam.attention.gather import split_qkv
from hrsam.attention.windows import window_plan


@register_attention("shifted_kv")
class ShiftedKVAttention(Pattern):
    """Padded windows with queries on real tokens only; plain windows when not ``shifted``."""

    def local_plan(self, grids, device):
        return window_plan(grids, self.window_size, self.shifted, device, self.shift_rule)

    def attend(self, qkv, grids, kernel, rope, scale):
        b, lp1, _, h, d = qkv.shape
        plan = window_plan(grids, self.window_size, self.shifted, qkv.device, self.shift_rule)
        s = self.window_size**2
        if needs_grad(qkv):  # gathers with their own backward (hrsam.attention.gather)
            q, k, v = split_qkv(qkv, plan)
        else:
            q = qkv[:, : lp1 - 1, 0]  # (B, L, H, D) raster order
            k, v = qkv[:, plan.slots, 1:].unbind(2)  # (B, nW * S, H, D)
        if rope is not None:
            q = rope(q, plan.token_positions)
            k = rope(k, plan.slot_positions)
        k, v = (t.view(b, plan.num_windows, s, h, d).transpose(2, 3) for t in (k, v))
        return kernel.attend_windows(q, k, v, plan, scale)


def needs_grad(t: Tensor) -> bool:
    return torch.is_grad_enabled() and t.requires_grad
