"""SAM's prompt encoder (HRSAM spec A.12), with SAM's parameter names.

Points are (x, y) in pixels of the padded T x T input canvas; +0.5 moves them to pixel centres and
they are normalized by T. Dense prompts: the previous low-resolution logits (4x the embedding
grid) through ``mask_downscaling``, else the learned ``no_mask_embed``. The image positional
encoding is computed on the training grid (64 x 64) and bilinearly resized to larger grids, as
HRSAM does, rather than recomputed.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hrsam.models.common import LayerNorm2d


class PositionEmbeddingRandom(nn.Module):
    """Random Fourier features of normalized coordinates (a fixed Gaussian matrix)."""

    def __init__(self, num_pos_feats: int = 128, scale: float = 1.0) -> None:
        super().__init__()
        self.register_buffer(
            "positional_encoding_gaussian_matrix", scale * torch.randn(2, num_pos_feats)
        )

    def _encode(self, coords: Tensor) -> Tensor:
        """coords in [0, 1] (..., 2) -> (..., 2 * num_pos_feats)."""
        coords = (2 * coords - 1) @ self.positional_encoding_gaussian_matrix
        coords = 2 * math.pi * coords
        return torch.cat([torch.sin(coords), torch.cos(coords)], -1)

    def forward(self, size: tuple[int, int]) -> Tensor:
        """(C, H, W) encoding of the pixel centres of an H x W grid."""
        h, w = size
        g = self.positional_encoding_gaussian_matrix
        grid = torch.ones(h, w, device=g.device, dtype=g.dtype)
        y = (grid.cumsum(0) - 0.5) / h
        x = (grid.cumsum(1) - 0.5) / w
        return self._encode(torch.stack([x, y], -1)).permute(2, 0, 1)

    def forward_with_coords(self, coords: Tensor, image_size: tuple[int, int]) -> Tensor:
        """Pixel coordinates (B, N, 2) as (x, y) -> (B, N, C)."""
        coords = coords.clone()
        coords[..., 0] = coords[..., 0] / image_size[1]
        coords[..., 1] = coords[..., 1] / image_size[0]
        return self._encode(coords.to(self.positional_encoding_gaussian_matrix.dtype))


class PromptEncoder(nn.Module):
    """Encodes points and the previous mask into sparse and dense prompt embeddings.

    Args:
        embed_dim: prompt embedding channels (256).
        image_embedding_size: the training embedding grid (64, 64).
        input_image_size: the training input size (1024, 1024).
        mask_in_chans: hidden channels of the mask downscaler (16).
    """

    def __init__(
        self,
        embed_dim: int = 256,
        image_embedding_size: tuple[int, int] = (64, 64),
        input_image_size: tuple[int, int] = (1024, 1024),
        mask_in_chans: int = 16,
    ) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.image_embedding_size = tuple(image_embedding_size)
        self.input_image_size = tuple(input_image_size)
        self.pe_layer = PositionEmbeddingRandom(embed_dim // 2)
        self.point_embeddings = nn.ModuleList(nn.Embedding(1, embed_dim) for _ in range(4))
        self.not_a_point_embed = nn.Embedding(1, embed_dim)
        self.mask_downscaling = nn.Sequential(
            nn.Conv2d(1, mask_in_chans // 4, 2, 2),
            LayerNorm2d(mask_in_chans // 4),
            nn.GELU(),
            nn.Conv2d(mask_in_chans // 4, mask_in_chans, 2, 2),
            LayerNorm2d(mask_in_chans),
            nn.GELU(),
            nn.Conv2d(mask_in_chans, embed_dim, 1),
        )
        self.no_mask_embed = nn.Embedding(1, embed_dim)

    def get_dense_pe(self, grid: tuple[int, int] | None = None) -> Tensor:
        """(1, C, H, W) image positional encoding: the training grid, resized to ``grid``."""
        pe = self.pe_layer(self.image_embedding_size).unsqueeze(0)
        if grid is not None and tuple(grid) != self.image_embedding_size:
            pe = F.interpolate(pe, size=tuple(grid), mode="bilinear", align_corners=False)
        return pe

    def embed_points(
        self, points: Tensor, labels: Tensor, pad: bool, image_size: tuple[int, int]
    ) -> Tensor:
        """(B, N, 2) (x, y) pixels and (B, N) labels {-1, 0, 1} -> (B, N [+1], C)."""
        points = points + 0.5  # pixel centres
        if pad:
            points = torch.cat([points, points.new_zeros(points.shape[0], 1, 2)], 1)
            labels = torch.cat([labels, -labels.new_ones(labels.shape[0], 1)], 1)
        emb = self.pe_layer.forward_with_coords(points, image_size)
        lab = labels[..., None]
        emb = torch.where(lab == -1, torch.zeros_like(emb), emb)
        emb = emb + (lab == -1) * self.not_a_point_embed.weight
        emb = emb + (lab == 0) * self.point_embeddings[0].weight
        emb = emb + (lab == 1) * self.point_embeddings[1].weight
        return emb

    def forward(
        self,
        points: tuple[Tensor, Tensor] | None,
        boxes: Tensor | None = None,
        masks: Tensor | None = None,
        image_size: tuple[int, int] | None = None,
        grid: tuple[int, int] | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Sparse (B, N, C) and dense (B, C, H, W) embeddings.

        Args:
            points: (coords (B, N, 2) as (x, y) pixels, labels (B, N)), or None.
            boxes: not used by the interactive protocol; must be None.
            masks: previous low-resolution logits (B, 1, 4H, 4W), or None.
            image_size: the padded input canvas (T, T); default the training size.
            grid: the embedding grid (H, W); default the training grid.
        """
        if boxes is not None:
            raise ValueError("box prompts are not supported; pass points and masks")
        image_size = tuple(image_size or self.input_image_size)
        grid = tuple(grid or self.image_embedding_size)
        b = (
            points[0].shape[0]
            if points is not None
            else (masks.shape[0] if masks is not None else 1)
        )
        sparse = self.no_mask_embed.weight.new_empty(b, 0, self.embed_dim)
        if points is not None:
            sparse = torch.cat(
                [sparse, self.embed_points(*points, pad=True, image_size=image_size)], 1
            )
        if masks is not None:
            dense = self.mask_downscaling(masks)
            if dense.shape[-2:] != grid:
                dense = F.interpolate(dense, size=grid, mode="bilinear", align_corners=False)
        else:
            dense = self.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(b, -1, *grid)
        return sparse, dense
