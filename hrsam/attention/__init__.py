"""Attention variants = pattern x kernel, with registries (HRSAM spec A.4-A.8).

Patterns: ``global``, ``window``, ``shifted_pad`` (v1), ``shifted_kv`` (v2 KV-only padding),
``swin`` (traditional roll + mask). Kernels: ``math``, ``sdpa``, ``flex``, ``xformers``,
``flash``. A new variant is one file plus one import line here.
"""

from hrsam.attention import global_, shifted_kv, shifted_pad, swin, window  # noqa: F401  (register)
from hrsam.attention.base import (
    ATTENTION,
    Attention,
    Pattern,
    get_attention,
    list_attention,
    register_attention,
    variant_support,
)
from hrsam.attention.kernels import KERNELS, Kernel, get_kernel, list_kernels, register_kernel
from hrsam.attention.rope import Rope2d
from hrsam.attention.windows import WindowPlan, window_plan

__all__ = [
    "ATTENTION",
    "KERNELS",
    "Attention",
    "Kernel",
    "Pattern",
    "Rope2d",
    "WindowPlan",
    "get_attention",
    "get_kernel",
    "list_attention",
    "list_kernels",
    "register_attention",
    "register_kernel",
    "variant_support",
    "window_plan",
]
