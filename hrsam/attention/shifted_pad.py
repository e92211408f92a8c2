"""``shifted_pad``: HRSAM v1 shifted windows with padding (spec A.6, A.7).

The grid is padded Ws/2 top/left and rounded up bottom/right; pad slots hold the learnable pad
token, so every query sees exactly Ws^2 keys. Pad slots also get queries, whose outputs are
computed and discarded, as the v1 code does.
"""

from __future__ import annotations

from hrsam.attention.base import Pattern, register_attention
from hrsam.attention.windows import window_plan


@register_attention("shifted_pad")
class ShiftedPadAttention(Pattern):
    """Padded windows, queries on every slot; plain windows when ``shifted`` is False."""

    def _shifted(self) -> bool:
        return self.shifted

    def attend(self, qkv, grids, kernel, rope, scale):
        b, _, _, h, d = qkv.shape
        plan = window_plan(grids, self.window_size, self._shifted(), qkv.device, self.shift_rule)
        s = self.window_size**2
        q, k, v = qkv[:, plan.slots].unbind(2)  # (B, nW * S, H, D)
        if rope is not None:
            q, k = rope(q, plan.slot_positions), rope(k, plan.slot_positions)
        q, k, v = (t.view(b, plan.num_windows, s, h, d).transpose(2, 3) for t in (q, k, v))
        out = kernel.attend(q, k, v, scale)  # (B, nW, H, S, D)
        out = out.transpose(2, 3).reshape(b, plan.num_slots, h, d)
        return out[:, plan.token_slot]
