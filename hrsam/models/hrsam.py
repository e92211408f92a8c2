"""HRSAM and HRSAM++ ViT backbones (HRSAM spec A.2-A.11).

HRSAM: patch embedding, the MAE 14x14 absolute position embedding bilinearly resized to the
token grid, 12 pre-norm blocks whose attention is a registered pattern x kernel (even blocks plain
windows, odd blocks shifted windows, each with its own pad token, 2-D RoPE in padded-grid
coordinates), a cycle-scan module before blocks 2, 5, 8, 11, and the multi-level neck
(per level Linear(768 -> 256, no bias) + LN, summed, depthwise 3x3 + LN).

HRSAM++: the same trunk over a multi-scale token sequence: the full T x T image plus each anchor
resized to an absolute size (512 px: a 32 x 32 grid). A per-scale cycle-scan runs before each
tapped block, a joint cycle-scan over all scales after it; each level fuses the scales (anchor
features upsampled to the full grid, a shared LayerNorm, channel concatenation) before the neck.

Parameter names follow the official checkpoints, so they load without renaming.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hrsam.attention import Attention
from hrsam.attention.rope import Rope2d
from hrsam.attention.windows import WindowPlan
from hrsam.models.common import ChannelsFirst, ChannelsLast, DropPath, Mlp
from hrsam.ssm.cycle_scan import CycleScan

# Inference runs a block this many tokens at a time, so the (tokens, 3C) qkv and (tokens, 4C)
# MLP activations stay in cache instead of streaming through memory (the MLP hidden alone is
# 800 MB at 4096 px): windows at a time for window-local attention, otherwise the token-wise
# half (norm, MLP, residual) in slices.
CHUNK_TOKENS = 2048


class Block(nn.Module):
    """Pre-norm ViT block with a pluggable attention; takes the token grids of the sequence."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float,
        *,
        attention: str,
        kernel: str,
        window_size: int,
        shifted: bool,
        rope: bool,
        drop_path: float = 0.0,
        shift_rule: str = "v2",
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(
            dim,
            num_heads,
            attention=attention,
            kernel=kernel,
            window_size=window_size,
            shifted=shifted,
            shift_rule=shift_rule,
            rope=rope,
        )
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.drop_path = DropPath(drop_path)

    def forward(self, x: Tensor, grids: Sequence[tuple[int, int]]) -> Tensor:
        inference = not (self.training or torch.is_grad_enabled())
        # The windowed path pays where activations fall out of cache (CPU); on a GPU it would
        # add many small launches and has not been measured there.
        if inference and x.device.type == "cpu":
            plan = self.attn.pattern.local_plan(tuple(grids), x.device)
            if plan is not None and not self.attn.kernel.packed:
                return self.forward_windows(x, plan)
        x = x + self.drop_path(self.attn(self.norm1(x), grids))
        n = CHUNK_TOKENS
        if not inference or x.shape[1] <= n:
            return x + self.drop_path(self.mlp(self.norm2(x)))
        for start in range(0, x.shape[1], n):  # x is this block's own tensor: update in place
            part = x[:, start : start + n]
            part += self.mlp(self.norm2(part))
        return x

    def forward_windows(self, x: Tensor, plan: WindowPlan) -> Tensor:
        """Inference of the whole block a few windows at a time, for KV-only padded windows.

        Every real token is the query of exactly one window, so the block is, per group of
        windows: gather their tokens, norm + qkv, fill the pad slots' keys/values from the pad
        token, RoPE, attention, projection and residual, norm + MLP and residual, scatter back.
        Equal to `forward` up to float rounding; each token is read and written once.
        """
        attn = self.attn
        b, _, c = x.shape
        h, d = attn.num_heads, attn.head_dim
        s = plan.window_size**2
        pad_kv = attn.qkv(attn.padding.to(x.dtype))[:, c:]  # (1, 2C): the pad slots' k, v
        if attn.rope is not None:
            q_table = attn.rope.table(plan.q_positions, x.dtype)
            k_table = attn.rope.table(plan.slot_positions, x.dtype)
        out = torch.empty_like(x)
        step = max(1, CHUNK_TOKENS // s)  # windows per chunk
        q0 = 0  # packed query offset of the current window
        for w0, w1, qlen in plan.groups:
            for a in range(w0, w1, step):
                e = min(a + step, w1)
                n, q1 = e - a, q0 + (e - a) * qlen
                tokens = plan.q_tokens[q0:q1]
                xc = x[:, tokens]  # (B, n * qlen, C) in window order
                qkv = attn.qkv(self.norm1(xc))
                if qlen == s:  # full windows: the queries fill the slots in order
                    kv = qkv[..., c:]
                else:
                    kv = pad_kv.expand(b, n * s, 2 * c).clone()
                    kv[:, plan.token_slot[tokens] - a * s] = qkv[..., c:]
                q = qkv[..., :c].unflatten(-1, (h, d))
                k, v = kv.unflatten(-1, (2, h, d)).unbind(2)
                if attn.rope is not None:
                    q = attn.rope.rotate(q, q_table[q0:q1])
                    k = attn.rope.rotate(k, k_table[a * s : e * s])
                q = q.reshape(b, n, qlen, h, d).transpose(2, 3)
                k, v = (t.reshape(b, n, s, h, d).transpose(2, 3) for t in (k, v))
                o = attn.kernel.attend(q, k, v, attn.scale)  # (B, n, H, qlen, D)
                xc = xc + attn.proj(o.transpose(2, 3).reshape(b, n * qlen, c))
                xc += self.mlp(self.norm2(xc))
                out[:, tokens] = xc
                q0 = q1
        return out


class RopeFreqs(nn.Module):
    """Holds the official ``rope.freqs`` buffer (the per-axis RoPE frequencies) for checkpoint
    compatibility; the rotation itself lives in each block's attention."""

    def __init__(self, head_dim: int) -> None:
        super().__init__()
        self.register_buffer("freqs", Rope2d(head_dim).freqs().float())


class HRSAMViT(nn.Module):
    """The HRSAM backbone: (B, 3, T, T) images -> (B, out_dim, T/16, T/16) embeddings.

    Args:
        img_size: pretraining image size; sizes the (img_size/16)^2 absolute position grid only.
        patch_size, in_chans, embed_dim, depth, num_heads, mlp_ratio: ViT shape.
        window_size: attention window side in tokens.
        attention, kernel: registered attention pattern and kernel for every block.
        rope: 2-D RoPE on q and k.
        ssm_indexes: blocks preceded by a cycle-scan module (empty: no cycle-scan).
        out_indexes: blocks whose outputs feed the neck.
        state_dim, cycle_repeats, scan: cycle-scan shape and backend.
        shift_rule: which grids shifted blocks shift: ``v2`` (larger than one window) or
            ``v1`` (every grid, as the released checkpoints were trained; spec A.8).
        out_dim: embedding channels.
        drop_path: maximum stochastic-depth rate (linear over blocks).
    """

    def __init__(
        self,
        img_size: int = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        window_size: int = 16,
        attention: str = "shifted_kv",
        kernel: str = "sdpa",
        rope: bool = True,
        ssm_indexes: Sequence[int] = (2, 5, 8, 11),
        out_indexes: Sequence[int] = (2, 5, 8, 11),
        state_dim: int = 32,
        cycle_repeats: int = 3,
        scan: str = "auto",
        out_dim: int = 256,
        drop_path: float = 0.0,
        shift_rule: str = "v2",
    ) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.embed_dim = embed_dim
        self.ssm_indexes = tuple(ssm_indexes)
        self.out_indexes = tuple(out_indexes)
        self.pos_grid = img_size // patch_size
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(in_chans, embed_dim, patch_size, patch_size)
        # MAE layout with a cls slot, which is dropped (spec A.3)
        self.pos_embed = nn.Parameter(torch.zeros(1, self.pos_grid**2 + 1, embed_dim))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.rope = RopeFreqs(embed_dim // num_heads)
        rates = [drop_path * i / max(depth - 1, 1) for i in range(depth)]  # linear, no tensor ops
        self.blocks = nn.ModuleList(
            Block(
                embed_dim,
                num_heads,
                mlp_ratio,
                attention=attention,
                kernel=kernel,
                window_size=window_size,
                shifted=i % 2 == 1,
                rope=rope,
                drop_path=rates[i],
                shift_rule=shift_rule,
            )
            for i in range(depth)
        )
        self._build_ssm(embed_dim, state_dim, cycle_repeats, scan)
        width = embed_dim * self.num_scales
        self.lateral_convs = nn.ModuleList(
            nn.Sequential(nn.Linear(width, out_dim, bias=False), nn.LayerNorm(out_dim))
            for _ in self.out_indexes
        )
        self.out_conv = nn.Sequential(
            nn.Conv2d(out_dim, out_dim, 3, padding=1, groups=out_dim, bias=False),
            ChannelsLast(),
            nn.LayerNorm(out_dim),
            ChannelsFirst(),
        )

    num_scales = 1

    def _build_ssm(self, dim: int, state_dim: int, repeats: int, scan: str) -> None:
        self.mamba_blocks = nn.ModuleList(
            CycleScan(dim, state_dim, repeats, scan) for _ in self.ssm_indexes
        )

    def set_kernel(self, kernel: str) -> None:
        """Swaps the attention kernel of every block."""
        for blk in self.blocks:
            blk.attn.set_kernel(kernel)

    def embed(self, img: Tensor) -> tuple[Tensor, tuple[int, int]]:
        """Patch tokens plus the resized absolute position embedding: (B, Hg*Wg, C), grid."""
        if img.shape[-1] % self.patch_size or img.shape[-2] % self.patch_size:
            raise ValueError(
                f"input {img.shape[-2]}x{img.shape[-1]} must be a multiple of the patch size "
                f"{self.patch_size} (ts must be a multiple of {self.patch_size})"
            )
        x = self.patch_embed.proj(img)  # (B, C, Hg, Wg)
        hg, wg = x.shape[-2:]
        pos = self.pos_embed[:, 1:].reshape(1, self.pos_grid, self.pos_grid, -1).permute(0, 3, 1, 2)
        if (hg, wg) != (self.pos_grid, self.pos_grid):
            pos = F.interpolate(pos, size=(hg, wg), mode="bilinear", align_corners=False)
        return (x + pos).flatten(2).transpose(1, 2), (hg, wg)

    def neck(self, levels: list[Tensor], grid: tuple[int, int]) -> Tensor:
        """Per-level lateral Linear + LN, summed, depthwise 3x3 + LN: (B, out_dim, Hg, Wg)."""
        x = sum(lat(feat) for lat, feat in zip(self.lateral_convs, levels, strict=True))
        x = x.transpose(1, 2).unflatten(2, grid)
        return self.out_conv(x)

    def forward(self, img: Tensor) -> Tensor:
        x, grid = self.embed(img)
        grids = (grid,)
        levels = []
        for i, blk in enumerate(self.blocks):
            if i in self.ssm_indexes:
                x = self.mamba_blocks[self.ssm_indexes.index(i)](x)
            x = blk(x, grids)
            if i in self.out_indexes:
                levels.append(x)
        return self.neck(levels, grid)


class HRSAMPlusPlusViT(HRSAMViT):
    """The HRSAM++ backbone: HRSAM over [full image ; anchors resized to ``anchor_sizes``].

    Args:
        anchor_sizes: absolute side (px) of each anchor scale, e.g. (512,).
        **kwargs: as `HRSAMViT`. ``ssm_indexes`` must equal ``out_indexes`` (or be empty).
    """

    def __init__(self, anchor_sizes: Sequence[int] = (512,), **kwargs) -> None:
        self.anchor_sizes = tuple(int(s) for s in anchor_sizes)
        if not self.anchor_sizes:
            raise ValueError("HRSAM++ needs at least one anchor size, e.g. anchor_sizes=(512,)")
        patch = kwargs.get("patch_size", 16)
        for s in self.anchor_sizes:
            if s < patch or s % patch:
                raise ValueError(f"anchor size {s} must be a positive multiple of {patch}")
        super().__init__(**kwargs)
        if self.ssm_indexes and self.ssm_indexes != self.out_indexes:
            raise ValueError(
                f"HRSAM++ runs its scans around the tapped blocks: ssm_indexes "
                f"{self.ssm_indexes} must equal out_indexes {self.out_indexes}"
            )
        self.multi_scale_fusion = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(self.embed_dim)) for _ in self.out_indexes
        )

    @property
    def num_scales(self) -> int:  # type: ignore[override]
        return 1 + len(self.anchor_sizes)

    def _build_ssm(self, dim: int, state_dim: int, repeats: int, scan: str) -> None:
        self.ss_mamba_blocks = nn.ModuleList(
            CycleScan(dim, state_dim, repeats, scan) for _ in self.ssm_indexes
        )
        self.ms_mamba_blocks = nn.ModuleList(
            CycleScan(dim, state_dim, repeats, scan) for _ in self.ssm_indexes
        )

    def fuse(self, x: Tensor, grids: Sequence[tuple[int, int]], level: int) -> Tensor:
        """Split by scale, upsample anchors to the full grid, shared LN, concat: (B, L0, C*S)."""
        b, _, c = x.shape
        parts = x.split([h * w for h, w in grids], 1)
        h0, w0 = grids[0]
        feats = [parts[0]]
        for part, (h, w) in zip(parts[1:], grids[1:], strict=True):
            m = part.transpose(1, 2).reshape(b, c, h, w)
            m = F.interpolate(m, size=(h0, w0), mode="bilinear", align_corners=False)
            feats.append(m.flatten(2).transpose(1, 2))
        norm = self.multi_scale_fusion[level]
        return torch.cat([norm(f) for f in feats], -1)

    def forward(self, img: Tensor) -> Tensor:
        tokens, grids = [], []
        for image in [img, *(self._anchor(img, s) for s in self.anchor_sizes)]:
            t, g = self.embed(image)
            tokens.append(t)
            grids.append(g)
        x = torch.cat(tokens, 1)
        lengths = [h * w for h, w in grids]
        levels = []
        for i, blk in enumerate(self.blocks):
            k = self.ssm_indexes.index(i) if i in self.ssm_indexes else None
            if k is not None:
                x = self.ss_mamba_blocks[k](x, lengths=lengths)
            x = blk(x, grids)
            if k is not None:
                x = self.ms_mamba_blocks[k](x)
            if i in self.out_indexes:
                levels.append(self.fuse(x, grids, self.out_indexes.index(i)))
        return self.neck(levels, grids[0])

    @staticmethod
    def _anchor(img: Tensor, size: int) -> Tensor:
        """The whole padded canvas resized to an absolute size x size (spec A.11)."""
        return F.interpolate(
            img, size=(size, size), mode="bilinear", align_corners=False, antialias=False
        )
