"""``window``: plain non-overlapping windows everywhere (no shift in any block).

The grid is padded bottom/right to whole windows with the learnable pad token (spec A.6);
pad-slot queries are discarded. With one window covering the grid this equals ``global``.
"""

from __future__ import annotations

from hrsam.attention.base import register_attention
from hrsam.attention.shifted_pad import ShiftedPadAttention


@register_attention("window")
class WindowAttention(ShiftedPadAttention):
    """Plain padded windows; ``shifted`` is ignored."""

    def _shifted(self) -> bool:
        return False
