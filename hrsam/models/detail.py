"""A detail path for the mask decoder: local image features at the mask's resolution (T/4).

SAM's decoder (and so HRSAM's) draws the mask at T/4 from the T/16 image embedding alone: the
two transposed convolutions upscale tokens, so the outline inside a token's 16 x 16 pixels must
be carried by that token's channels. ``add_detail(model, channels)`` gives the decoder the
pixels' own evidence there (as HQ-SAM gives it early features): ``DetailEncoder``, two strided
3x3 convolutions on the normalized input (T -> T/4, ``channels`` features), runs once per image
beside the image encoder; ``DetailFuse``, two 3x3 convolutions on the upscaled embedding and
those features, adds a correction to the upscaled embedding before the hypernetworks read it.
The fuse's last layer starts at zero, so a model with the path added computes exactly what it
computed before; training then uses it.

The detail features travel inside the image embedding, as extra channels (pixel-unshuffled from
T/4 to T/16), so everything that caches one image's embedding (the predictor, the training
loop's click rounds, the app) caches them too, unchanged: `InteractiveSegmenter.encode` appends
them and `InteractiveSegmenter.decode` takes them off again.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import Tensor, nn

PACK = 4  # T/4 features packed into T/16 channels: 4 x 4 pixels per token


class DetailEncoder(nn.Module):
    """(B, 3, T, T) normalized input -> (B, channels, T/4, T/4) local features."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, channels, 3, 2, 1)
        self.conv2 = nn.Conv2d(channels, channels, 3, 2, 1)

    def forward(self, x: Tensor) -> Tensor:
        return F.gelu(self.conv2(F.gelu(self.conv1(x))))


class DetailFuse(nn.Module):
    """The upscaled embedding (B, C, T/4, T/4) and the detail features -> a correction to add to
    it; zero until trained (``conv2`` starts at zero)."""

    def __init__(self, channels: int, detail: int, hidden: int = 16) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels + detail, hidden, 3, 1, 1)
        self.conv2 = nn.Conv2d(hidden, channels, 3, 1, 1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, up: Tensor, detail: Tensor) -> Tensor:
        return self.conv2(F.gelu(self.conv1(torch.cat([up, detail], 1))))


def pack(embedding: Tensor, detail: Tensor) -> Tensor:
    """(B, C, H, W) embedding and (B, D, 4H, 4W) detail -> (B, C + 16 D, H, W)."""
    return torch.cat([embedding, F.pixel_unshuffle(detail, PACK)], 1)


def unpack(packed: Tensor, channels: int) -> tuple[Tensor, Tensor]:
    """`pack`'s inverse: the first ``channels`` channels, and the detail at 4x the grid."""
    return packed[:, :channels], F.pixel_shuffle(packed[:, channels:], PACK)


def add_detail(model: nn.Module, channels: int) -> nn.Module:
    """``model`` (in place) with the detail path of ``channels`` features (module docstring);
    its outputs are unchanged until the path is trained, and its preset says ``detail``, so
    checkpoints rebuild it. New weights come from the global torch RNG. `build_model` calls it
    for a preset with ``detail``."""
    if channels < 1:
        raise ValueError(f"detail channels: {channels} must be >= 1")
    if model.detail_encoder is not None:
        raise ValueError("the model has a detail path already")
    upscaled = model.mask_decoder.output_upscaling[3].out_channels
    model.detail_encoder = DetailEncoder(channels)
    model.mask_decoder.detail_fuse = DetailFuse(upscaled, channels)
    if getattr(model, "preset", None) is not None and model.preset.detail != channels:
        model.preset = dataclasses.replace(model.preset, detail=channels)
    return model


__all__ = ["DetailEncoder", "DetailFuse", "add_detail", "pack", "unpack"]
