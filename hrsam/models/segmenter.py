"""The interactive segmenter: image encoder (once per image) + prompt encoder + mask decoder
(per click), the SAM composition that HRSAM keeps (spec A.1, A.14)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hrsam.models.detail import pack, unpack, unpack_refine
from hrsam.models.mask_decoder import MaskDecoder
from hrsam.models.prompt_encoder import PromptEncoder

# ImageNet statistics in 0..255, applied to the channel order of each checkpoint family (C.4)
PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)


class InteractiveSegmenter(nn.Module):
    """image_encoder + prompt_encoder + mask_decoder, with SAM's checkpoint prefixes.

    Args:
        image_encoder: (B, 3, T, T) normalized images -> (B, 256, T/16, T/16).
        prompt_encoder, mask_decoder: SAM's heads.
        image_format: channel order the weights expect ("RGB" for SAM, "BGR" for the official
            HRSAM checkpoints, which normalize BGR pixels with RGB statistics: spec F.10).
    """

    def __init__(
        self,
        image_encoder: nn.Module,
        prompt_encoder: PromptEncoder,
        mask_decoder: MaskDecoder,
        image_format: str = "RGB",
    ) -> None:
        super().__init__()
        if image_format not in ("RGB", "BGR"):
            raise ValueError(f"image_format={image_format!r} must be 'RGB' or 'BGR'")
        self.image_encoder = image_encoder
        self.prompt_encoder = prompt_encoder
        self.mask_decoder = mask_decoder
        self.image_format = image_format
        self.detail_encoder: nn.Module | None = None  # hrsam.models.detail.add_detail
        self.register_buffer(
            "pixel_mean", torch.tensor(PIXEL_MEAN).view(-1, 1, 1), persistent=False
        )
        self.register_buffer("pixel_std", torch.tensor(PIXEL_STD).view(-1, 1, 1), persistent=False)

    def normalize(self, image: Tensor) -> Tensor:
        """(B, 3, H, W) RGB pixels in 0..255 -> normalized input in this model's channel order."""
        if self.image_format == "BGR":
            image = image.flip(1)
        return (image - self.pixel_mean) / self.pixel_std

    def encode(self, image: Tensor) -> Tensor:
        """(B, 3, T, T) normalized -> (B, 256, T/16, T/16) image embedding (with a detail path,
        its T/4 features packed behind the 256 channels: `hrsam.models.detail`)."""
        embedding = self.image_encoder(image)
        if self.detail_encoder is None:
            return embedding
        if self.mask_decoder.detail_refine is None:
            return pack(embedding, self.detail_encoder(image))
        half, quarter = self.detail_encoder.features(image)
        return pack(embedding, quarter, half)

    def decode(
        self,
        embedding: Tensor,
        points: Tensor | None,
        labels: Tensor | None,
        prev_logits: Tensor | None = None,
        multimask: bool = False,
    ) -> tuple[Tensor, Tensor]:
        """One click step.

        Args:
            embedding: (B, 256, H, W) image embedding of a T = 16H input.
            points: (B, N, 2) (x, y) in input-canvas pixels, or None.
            labels: (B, N) 1 positive, 0 negative, -1 padding.
            prev_logits: (B, 1, 4H, 4W) previous raw low-resolution logits (or a refine path's
                (B, 1, 8H, 8W), averaged down to 4H x 4W), or None.
            multimask: return SAM's three masks instead of the single mask (token 0).

        Returns:
            low-resolution logits (B, 1 or 3, 4H, 4W), (8H, 8W) with a refine path
            (`hrsam.models.detail`), and IoU predictions.
        """
        detail = half = None
        channels = self.mask_decoder.transformer_dim
        if self.mask_decoder.detail_refine is not None:
            embedding, detail, half = unpack_refine(embedding, channels)
        elif self.detail_encoder is not None:
            embedding, detail = unpack(embedding, channels)
        grid = tuple(embedding.shape[-2:])
        if prev_logits is not None and prev_logits.shape[-2] == 8 * grid[0]:
            prev_logits = F.avg_pool2d(prev_logits, 2)
        image_size = (grid[0] * 16, grid[1] * 16)
        pts = None if points is None else (points, labels)
        sparse, dense = self.prompt_encoder(
            pts, None, prev_logits, image_size=image_size, grid=grid
        )
        return self.mask_decoder(
            embedding,
            self.prompt_encoder.get_dense_pe(grid),
            sparse,
            dense,
            multimask,
            detail,
            half,
        )

    def forward(
        self, image: Tensor, points: Tensor, labels: Tensor, prev_logits: Tensor | None = None
    ) -> Tensor:
        """Single-mask logits upsampled to the input size: (B, 1, T, T)."""
        low, _ = self.decode(self.encode(image), points, labels, prev_logits)
        return F.interpolate(low, size=image.shape[-2:], mode="bilinear", align_corners=False)
