"""The attention pattern interface, its registry, and the ViT-block attention module.

An attention variant is a pattern (which tokens see which) times a kernel (how it is computed).
A pattern turns projected ``qkv`` into attention outputs; the module around it owns the qkv and
output projections, the learnable pad token (spec A.7) and RoPE (spec A.4).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from hrsam.attention.kernels import Kernel, get_kernel
from hrsam.attention.rope import Rope2d
from hrsam.attention.windows import (
    Grid,
    WindowPlan,
    check_grids,
    check_shift_rule,
    check_window_size,
)
from hrsam.registry import Registry

ATTENTION: Registry[type[Pattern]] = Registry("attention")
register_attention = ATTENTION.register


class Pattern:
    """Which tokens attend to which. Subclasses implement `attend`.

    Args:
        window_size: window side in tokens.
        shifted: whether this block uses shifted windows (odd blocks in HRSAM).
        shift_rule: which grids a shifted block shifts: ``v2`` only grids larger than one
            window, ``v1`` every grid (as the released checkpoints were trained; spec A.8).
    """

    name: str = ""
    needs_bias: bool = False  # True if the pattern passes an additive mask to the kernel

    def __init__(
        self, window_size: int = 16, shifted: bool = False, shift_rule: str = "v2"
    ) -> None:
        self.window_size = check_window_size(window_size)
        self.shifted = bool(shifted)
        self.shift_rule = check_shift_rule(shift_rule)

    def attend(
        self,
        qkv: Tensor,
        grids: tuple[Grid, ...],
        kernel: Kernel,
        rope: Rope2d | None,
        scale: float,
    ) -> Tensor:
        """Attention outputs for real tokens.

        Args:
            qkv: (B, L + 1, 3, H, D) projected tokens in raster order; row L is the projected
                pad token.
            grids: token grids of the scales, in sequence order.
            kernel: the attention kernel.
            rope: rotary tables, or None for no RoPE.
            scale: softmax scale.

        Returns:
            (B, L, H, D) in raster order.
        """
        raise NotImplementedError

    def local_plan(self, grids: tuple[Grid, ...], device: torch.device) -> WindowPlan | None:
        """The window plan when this pattern is KV-only padded window attention (each real
        token is the query of exactly one window, whose Ws^2 slots are its keys), else None.

        Inference then runs a whole block a few windows at a time (`hrsam.models.hrsam.Block`).
        """
        return None

    def __repr__(self) -> str:
        return f"{self.name}(window_size={self.window_size}, shifted={self.shifted})"


def list_attention(pattern: str = "*") -> list[str]:
    """Registered attention pattern names matching an fnmatch pattern."""
    return ATTENTION.names(pattern)


def get_attention(name: str) -> type[Pattern]:
    """The pattern class registered as ``name``; an unknown name lists the valid ones."""
    return ATTENTION.get(name)


def variant_support(
    attention: str,
    kernel: str,
    device: torch.device | str,
    dtype: torch.dtype,
    backward: bool = False,
) -> list[str]:
    """Why (attention, kernel) cannot run on ``device`` in ``dtype``; empty when it can."""
    pattern = get_attention(attention)
    k = get_kernel(kernel)
    reasons = k.support(device, dtype, backward)
    if pattern.needs_bias and not k.supports_bias:
        reasons.append(f"{kernel} cannot apply the additive mask that {attention} needs")
    return reasons


class Attention(nn.Module):
    """Multi-head attention of a ViT block with a pluggable pattern and kernel.

    Parameter names match the official HRSAM checkpoints (``qkv``, ``proj``, ``padding``).

    Args:
        dim: token channels.
        num_heads: attention heads.
        attention: registered pattern name (``list_attention()``).
        kernel: registered kernel name (``list_kernels()``).
        window_size: window side in tokens.
        shifted: shifted windows in this block.
        shift_rule: ``v1`` or ``v2`` (`Pattern`).
        rope: apply 2-D RoPE to q and k.
        qkv_bias: bias in the qkv projection.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        attention: str = "shifted_kv",
        kernel: str = "sdpa",
        window_size: int = 16,
        shifted: bool = False,
        shift_rule: str = "v2",
        rope: bool = True,
        qkv_bias: bool = True,
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim={dim} must be divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        # The learnable pad token lives in post-LayerNorm space, one per block (spec A.7).
        self.padding = nn.Parameter(torch.zeros(1, dim))
        self.pattern = get_attention(attention)(
            window_size=window_size, shifted=shifted, shift_rule=shift_rule
        )
        self.kernel = get_kernel(kernel)
        self.rope = Rope2d(self.head_dim) if rope else None

    def set_kernel(self, kernel: str) -> None:
        """Swaps the kernel; weights are untouched."""
        self.kernel = get_kernel(kernel)

    def forward(self, x: Tensor, grids: Sequence[Sequence[int]]) -> Tensor:
        """(B, L, C) normalized tokens in raster order (scales concatenated) -> (B, L, C)."""
        b, length, c = x.shape
        grids = check_grids(grids, length)
        tokens = torch.cat([x, self.padding.to(x.dtype).expand(b, 1, c)], 1)
        qkv = self.qkv(tokens).view(b, length + 1, 3, self.num_heads, self.head_dim)
        out = self.pattern.attend(qkv, grids, self.kernel, self.rope, self.scale)
        return self.proj(out.reshape(b, length, c))

    def extra_repr(self) -> str:
        return f"heads={self.num_heads}, pattern={self.pattern!r}, kernel={self.kernel.name}"
