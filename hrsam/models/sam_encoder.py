"""SAM's image encoder (ViT-B/L/H; Kirillov et al. 2023): windowed blocks with decomposed relative
positions, a few global blocks, and SAM's neck. Parameter names match the official
``segment-anything`` checkpoints (``image_encoder.*``).

The attention runs through the kernel registry (``kernel="math"`` is the official computation;
``sdpa``/``flex`` take the relative-position bias as an additive mask, built a few heads at a
time so that a global block at 2048 px needs ~1 GB of bias rather than 13 GB; the official
computation materializes all heads' scores at once). ``global_attn_indexes=()``
makes every block windowed ("SAM with window attention"). Inputs other than ``img_size`` resize
the absolute position embedding (bilinear) and the relative tables (linear, as SAM does).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hrsam.attention.kernels import get_kernel
from hrsam.models.common import LayerNorm2d, MLPBlock


def get_rel_pos(q_size: int, k_size: int, rel_pos: Tensor) -> Tensor:
    """Relative-position table (q_size, k_size, C), resized linearly when sizes differ."""
    max_dist = 2 * max(q_size, k_size) - 1
    if rel_pos.shape[0] != max_dist:
        rel_pos = F.interpolate(rel_pos.T[None], size=max_dist, mode="linear")[0].T
    q_coords = torch.arange(q_size, device=rel_pos.device)[:, None] * max(k_size / q_size, 1.0)
    k_coords = torch.arange(k_size, device=rel_pos.device)[None, :] * max(q_size / k_size, 1.0)
    rel = (q_coords - k_coords) + (k_size - 1) * max(q_size / k_size, 1.0)
    return rel_pos[rel.long()]


def rel_pos_bias(q: Tensor, rel_pos_h: Tensor, rel_pos_w: Tensor, size: tuple[int, int]) -> Tensor:
    """Decomposed relative-position bias (B, H*W, H*W) for q (B, H*W, C) (unscaled q, as SAM)."""
    h, w = size
    rh, rw = get_rel_pos(h, h, rel_pos_h), get_rel_pos(w, w, rel_pos_w)
    r_q = q.reshape(q.shape[0], h, w, -1)
    bias_h = torch.einsum("bhwc,hkc->bhwk", r_q, rh)
    bias_w = torch.einsum("bhwc,wkc->bhwk", r_q, rw)
    return (bias_h[:, :, :, :, None] + bias_w[:, :, :, None, :]).reshape(q.shape[0], h * w, h * w)


# fused kernels build the (heads, N, N) relative-position bias this many bytes at a time at most
BIAS_CHUNK_BYTES = 256 * 2**20


class SamAttention(nn.Module):
    """Multi-head attention with optional decomposed relative positions, on a (B, H, W, C) map."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        input_size: tuple[int, int],
        kernel: str,
        use_rel_pos: bool = True,
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.use_rel_pos = use_rel_pos
        if use_rel_pos:
            hd = dim // num_heads
            self.rel_pos_h = nn.Parameter(torch.zeros(2 * input_size[0] - 1, hd))
            self.rel_pos_w = nn.Parameter(torch.zeros(2 * input_size[1] - 1, hd))
        self.kernel = get_kernel(kernel)

    def forward(self, x: Tensor) -> Tensor:
        b, h, w, c = x.shape
        nh = self.num_heads
        qkv = self.qkv(x).reshape(b, h * w, 3, nh, -1).permute(2, 0, 3, 1, 4)  # (3, B, nh, N, hd)
        q, k, v = qkv.unbind(0)
        if not self.use_rel_pos:
            out = self.kernel.attend(q, k, v, self.scale)  # (B, nh, N, hd)
            return self.proj(out.transpose(1, 2).reshape(b, h, w, c))
        n = h * w
        step = nh
        if self.kernel.name != "math":
            step = max(1, min(nh, BIAS_CHUNK_BYTES // (b * n * n * q.element_size())))
        outs = []
        for i in range(0, nh, step):
            qi = q[:, i : i + step]
            bias = rel_pos_bias(
                qi.reshape(-1, n, qi.shape[-1]), self.rel_pos_h, self.rel_pos_w, (h, w)
            ).view(b, qi.shape[1], n, n)
            outs.append(
                self.kernel.attend(qi, k[:, i : i + step], v[:, i : i + step], self.scale, bias)
            )
        out = outs[0] if len(outs) == 1 else torch.cat(outs, 1)
        return self.proj(out.transpose(1, 2).reshape(b, h, w, c))


def window_partition(x: Tensor, ws: int) -> tuple[Tensor, tuple[int, int]]:
    """(B, H, W, C) -> (B * nW, ws, ws, C) with zero padding bottom/right, and the padded size."""
    b, h, w, c = x.shape
    ph, pw = (ws - h % ws) % ws, (ws - w % ws) % ws
    if ph or pw:
        x = F.pad(x, (0, 0, 0, pw, 0, ph))
    hp, wp = h + ph, w + pw
    x = x.view(b, hp // ws, ws, wp // ws, ws, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, ws, ws, c), (hp, wp)


def window_unpartition(
    x: Tensor, ws: int, padded: tuple[int, int], size: tuple[int, int]
) -> Tensor:
    """Inverse of `window_partition`, cropping the padding."""
    hp, wp = padded
    b = x.shape[0] // ((hp // ws) * (wp // ws))
    x = x.view(b, hp // ws, wp // ws, ws, ws, -1).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, hp, wp, -1)[:, : size[0], : size[1]].contiguous()


class SamBlock(nn.Module):
    """SAM's transformer block: windowed (window_size > 0) or global attention."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float,
        window_size: int,
        input_size: tuple[int, int],
        kernel: str,
        use_rel_pos: bool,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        size = input_size if window_size == 0 else (window_size, window_size)
        self.attn = SamAttention(dim, num_heads, size, kernel, use_rel_pos)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = MLPBlock(dim, int(dim * mlp_ratio))
        self.window_size = window_size

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x
        x = self.norm1(x)
        if self.window_size > 0:
            h, w = x.shape[1:3]
            x, padded = window_partition(x, self.window_size)
            x = window_unpartition(self.attn(x), self.window_size, padded, (h, w))
        else:
            x = self.attn(x)
        x = shortcut + x
        return x + self.mlp(self.norm2(x))


class SamImageEncoder(nn.Module):
    """SAM ViT image encoder: (B, 3, T, T) -> (B, out_chans, T/16, T/16).

    Args:
        img_size: training input size (1024); sizes the position embedding and global tables.
        embed_dim, depth, num_heads: ViT shape (B: 768/12/12, L: 1024/24/16, H: 1280/32/16).
        global_attn_indexes: blocks with global attention; the rest use ``window_size``.
        kernel: attention kernel (``math`` = official).
    """

    def __init__(
        self,
        img_size: int = 1024,
        patch_size: int = 16,
        in_chans: int = 3,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        out_chans: int = 256,
        window_size: int = 14,
        global_attn_indexes: Sequence[int] = (2, 5, 8, 11),
        kernel: str = "math",
        use_rel_pos: bool = True,
    ) -> None:
        super().__init__()
        self.patch_size = patch_size
        grid = img_size // patch_size
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(in_chans, embed_dim, patch_size, patch_size)
        self.pos_embed = nn.Parameter(torch.zeros(1, grid, grid, embed_dim))
        self.blocks = nn.ModuleList(
            SamBlock(
                embed_dim,
                num_heads,
                mlp_ratio,
                0 if i in global_attn_indexes else window_size,
                (grid, grid),
                kernel,
                use_rel_pos,
            )
            for i in range(depth)
        )
        self.neck = nn.Sequential(
            nn.Conv2d(embed_dim, out_chans, 1, bias=False),
            LayerNorm2d(out_chans),
            nn.Conv2d(out_chans, out_chans, 3, padding=1, bias=False),
            LayerNorm2d(out_chans),
        )

    def set_kernel(self, kernel: str) -> None:
        for blk in self.blocks:
            blk.attn.kernel = get_kernel(kernel)

    def forward(self, img: Tensor) -> Tensor:
        if img.shape[-1] % self.patch_size or img.shape[-2] % self.patch_size:
            raise ValueError(
                f"input {img.shape[-2]}x{img.shape[-1]} must be a multiple of the "
                f"patch size {self.patch_size}"
            )
        x = self.patch_embed.proj(img).permute(0, 2, 3, 1)  # (B, Hg, Wg, C)
        pos = self.pos_embed
        if pos.shape[1:3] != x.shape[1:3]:
            pos = F.interpolate(
                pos.permute(0, 3, 1, 2), size=x.shape[1:3], mode="bilinear", align_corners=False
            ).permute(0, 2, 3, 1)
        x = x + pos
        for blk in self.blocks:
            x = blk(x)
        return self.neck(x.permute(0, 3, 1, 2))
