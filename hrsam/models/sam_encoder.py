"""SAM's image encoder (ViT-B/L/H; Kirillov et al. 2023): windowed blocks with decomposed relative
positions, a few global blocks, and SAM's neck. Parameter names match the official
``segment-anything`` checkpoints (``image_encoder.*``).

The attention runs through the kernel registry. ``kernel="math"`` is the official computation:
all heads' (N, N) scores at once, the decomposed relative-position bias added to them with a 5-D
broadcast, softmax, then the product with v. Fused kernels (``sdpa``, ``flex``) instead take the
bias as an additive mask built for a block of queries at a time (`BIAS_CHUNK_BYTES`), written
straight into a contiguous buffer, and the kernel never sees more than that block: the scores
are never materialized, and a global block at 2048 px needs 64 MB of bias rather than 13 GB.
This is why our ``sdpa`` SAM is faster than the official code on CPU (measured side by side in
benchmarks/results/cpu/official/backbone.md). ``global_attn_indexes=()``
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


def rel_pos_terms(
    q: Tensor, rel_pos_h: Tensor, rel_pos_w: Tensor, size: tuple[int, int]
) -> tuple[Tensor, Tensor]:
    """The two factors of SAM's decomposed relative-position bias for q (B, H*W, C) (unscaled, as
    SAM): ``rel_h`` (B, H*W, H) and ``rel_w`` (B, H*W, W), so that the bias of query i and key
    (kh, kw) is ``rel_h[:, i, kh] + rel_w[:, i, kw]``."""
    h, w = size
    rh, rw = get_rel_pos(h, h, rel_pos_h), get_rel_pos(w, w, rel_pos_w)
    r_q = q.reshape(q.shape[0], h, w, -1)
    rel_h = torch.einsum("bhwc,hkc->bhwk", r_q, rh).reshape(q.shape[0], h * w, h)
    rel_w = torch.einsum("bhwc,wkc->bhwk", r_q, rw).reshape(q.shape[0], h * w, w)
    return rel_h, rel_w


def rel_pos_bias(q: Tensor, rel_pos_h: Tensor, rel_pos_w: Tensor, size: tuple[int, int]) -> Tensor:
    """Decomposed relative-position bias (B, H*W, H*W) for q (B, H*W, C) (unscaled q, as SAM)."""
    h, w = size
    rel_h, rel_w = rel_pos_terms(q, rel_pos_h, rel_pos_w, size)
    return (rel_h[:, :, :, None] + rel_w[:, :, None, :]).reshape(q.shape[0], h * w, h * w)


# fused kernels get the (B, heads, queries, N) relative-position bias of a block of queries at a
# time, this many bytes at most (at least one query): small enough to stay in the last-level cache
# between being written and being read by the kernel
BIAS_CHUNK_BYTES = 64 * 2**20


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
        """(B, H, W, C) -> (B, H, W, C)."""
        return self.proj(self.core(self.qkv(x)))

    def core(self, qkv: Tensor) -> Tensor:
        """Attention from projected tokens (B, H, W, 3C) to outputs (B, H, W, C) before ``proj``."""
        b, h, w, c3 = qkv.shape
        c, nh = c3 // 3, self.num_heads
        qkv = qkv.reshape(b, h * w, 3, nh, -1).permute(2, 0, 3, 1, 4)  # (3, B, nh, N, hd)
        q, k, v = qkv.unbind(0)
        if not self.use_rel_pos:
            out = self.kernel.attend(q, k, v, self.scale)  # (B, nh, N, hd)
            return out.transpose(1, 2).reshape(b, h, w, c)
        n = h * w
        if self.kernel.name == "math":  # the official computation: every head's scores at once
            bias = rel_pos_bias(q.reshape(b * nh, n, -1), self.rel_pos_h, self.rel_pos_w, (h, w))
            out = self.kernel.attend(q, k, v, self.scale, bias.view(b, nh, n, n))
            return out.transpose(1, 2).reshape(b, h, w, c)
        rel_h, rel_w = (
            t.view(b, nh, n, -1)
            for t in rel_pos_terms(q.reshape(b * nh, n, -1), self.rel_pos_h, self.rel_pos_w, (h, w))
        )
        step = max(1, min(n, BIAS_CHUNK_BYTES // (b * nh * n * q.element_size())))
        # Without autograd the bias of each block of queries is written into one reused buffer
        # (``out=`` keeps it row-major: the broadcast add alone picks a layout that the kernel
        # would copy again). With autograd it is a fresh tensor per block.
        fresh = torch.is_grad_enabled() and (q.requires_grad or rel_h.requires_grad)
        buf = None if fresh else q.new_empty(b, nh, step, h, w)
        outs = []
        for i in range(0, n, step):
            j = min(n, i + step)
            rh, rw = rel_h[:, :, i:j, :, None], rel_w[:, :, i:j, None, :]
            bias = rh + rw if fresh else torch.add(rh, rw, out=buf[:, :, : j - i])
            bias = bias.reshape(b, nh, j - i, n)  # a view of the buffer
            o = self.kernel.attend(q[:, :, i:j], k, v, self.scale, bias)
            outs.append(o.transpose(1, 2))  # (B, queries, nh, hd)
        out = outs[0] if len(outs) == 1 else torch.cat(outs, 1)
        return out.reshape(b, h, w, c)


def window_partition(
    x: Tensor, ws: int, fill: Tensor | None = None
) -> tuple[Tensor, tuple[int, int]]:
    """(B, H, W, C) -> (B * nW, ws, ws, C) padded bottom/right with zeros (or the (C,) vector
    ``fill``), and the padded size."""
    b, h, w, c = x.shape
    ph, pw = (ws - h % ws) % ws, (ws - w % ws) % ws
    if (ph or pw) and fill is None:
        x = F.pad(x, (0, 0, 0, pw, 0, ph))
    elif ph or pw:
        full = fill.to(x.dtype).expand(b, h + ph, w + pw, c).contiguous()
        full[:, :h, :w] = x
        x = full
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
        # math: the official computation step by step (the reference); fused kernels project
        # only the real tokens of windowed blocks
        self.pad_free = kernel != "math"

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x
        x = self.norm1(x)
        if self.window_size > 0 and self.pad_free:
            # The official code pads the normalized map with zeros and projects every slot; a
            # zero token's q, k, v are the qkv bias and pad-slot outputs are cropped, so qkv and
            # proj run on the real tokens only and the pad slots get the bias (same values).
            h, w = x.shape[1:3]
            qkv, padded = window_partition(self.attn.qkv(x), self.window_size, self.attn.qkv.bias)
            x = self.attn.core(qkv)
            x = self.attn.proj(window_unpartition(x, self.window_size, padded, (h, w)))
        elif self.window_size > 0:
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
            blk.pad_free = kernel != "math"

    def forward(self, img: Tensor) -> Tensor:
        if img.shape[-1] % self.patch_size or img.shape[-2] % self.patch_size:
            raise ValueError(
                f"input {img.shape[-2]}x{img.shape[-1]} must be a multiple of the "
                f"patch size {self.patch_size}"
            )
        x = self.patch_embed.proj(img).permute(0, 2, 3, 1)  # (B, Hg, Wg, C)
        if self.blocks[0].pad_free:
            # The permuted view keeps the convolution's (B, C, H, W) memory order, and every add
            # of the residual stream would inherit it, so that each norm and linear first copies
            # its input; one copy here makes the stream row-major (the official code does not).
            x = x.contiguous()
        pos = self.pos_embed
        if pos.shape[1:3] != x.shape[1:3]:
            pos = F.interpolate(
                pos.permute(0, 3, 1, 2), size=x.shape[1:3], mode="bilinear", align_corners=False
            ).permute(0, 2, 3, 1)
        x = x + pos
        for blk in self.blocks:
            x = blk(x)
        return self.neck(x.permute(0, 3, 1, 2))
