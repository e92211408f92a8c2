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

``add_refine(model, hidden)`` goes one step further, for a model with the path: the decoder's
mask at T/2 instead of T/4. ``DetailRefine`` upsamples each returned T/4 mask's logits 2x and
adds a correction from two 3x3 convolutions on those logits and the detail encoder's own T/2
features (its first convolution's output, packed as well); the last layer starts at zero, so
the T/2 mask starts as the T/4 mask upsampled. The decoder then returns (B, K, 8H, 8W) logits;
fed back as the previous mask they are averaged down to the prompt encoder's 4H x 4W (a T/4
previous mask, such as the oracle's, is taken as it is).
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import Tensor, nn

PACK = 4  # T/4 features packed into T/16 channels: 4 x 4 pixels per token


class ContextBlock(nn.Module):
    """A residual block of two dilated 3x3 convolutions on the T/4 detail features: each adds
    ``4 * dilation`` cells (16 * dilation input pixels) to their receptive field. Its last
    convolution starts at zero: the block starts as the identity."""

    def __init__(self, channels: int, dilation: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, 1, dilation, dilation)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, dilation, dilation)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: Tensor) -> Tensor:
        y = x.contiguous(memory_format=torch.channels_last)  # faster convolutions on the CPU
        return x + self.conv2(F.gelu(self.conv1(y)))


def context_blocks(channels: int, n: int) -> nn.ModuleList:
    """``n`` `ContextBlock` of ``channels``, dilations 2, 4, 8, ..."""
    return nn.ModuleList(ContextBlock(channels, 2 ** (i + 1)) for i in range(n))


class DetailEncoder(nn.Module):
    """(B, 3, T, T) normalized input -> (B, channels, T/4, T/4) local features; with
    ``context`` blocks (`ContextBlock`, dilations 2, 4, ...) the T/4 features also see the
    texture about them."""

    def __init__(self, channels: int, context: int = 0) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, channels, 3, 2, 1)
        self.conv2 = nn.Conv2d(channels, channels, 3, 2, 1)
        self.context = context_blocks(channels, context)

    def forward(self, x: Tensor) -> Tensor:
        return self.features(x)[1]

    def features(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The T/2 features (the first convolution's) and the T/4 ones."""
        half = F.gelu(self.conv1(x))
        quarter = F.gelu(self.conv2(half))
        for block in self.context:
            quarter = block(quarter)
        return half, quarter


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


class DetailRefine(nn.Module):
    """T/4 mask logits (B, K, h, w) and the T/2 detail features (1 or B, D, 2h, 2w) -> (B, K, 2h,
    2w) logits: the masks upsampled 2x plus a correction from both, zero until trained
    (``conv2`` starts at zero). Two narrow convolutions: it runs at 4x the T/4 pixels, on every
    click."""

    def __init__(self, detail: int, hidden: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1 + detail, hidden, 3, 1, 1)
        self.conv2 = nn.Conv2d(hidden, 1, 3, 1, 1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, masks: Tensor, half: Tensor) -> Tensor:
        b, k, h, w = masks.shape
        m = F.interpolate(
            masks.reshape(b * k, 1, h, w), scale_factor=2, mode="bilinear", align_corners=False
        )
        x = torch.cat([m, half.expand(b, -1, -1, -1).repeat_interleave(k, 0)], 1)
        x = x.contiguous(memory_format=torch.channels_last)  # 2-3x faster convs on the CPU
        return (m + self.conv2(F.gelu(self.conv1(x)))).reshape(b, k, 2 * h, 2 * w)


def pack(embedding: Tensor, detail: Tensor, half: Tensor | None = None) -> Tensor:
    """(B, C, H, W) embedding and (B, D, 4H, 4W) detail (and (B, D, 8H, 8W) T/2 features, for a
    refine path) -> (B, C + 16 D (+ 64 D), H, W)."""
    parts = [embedding, F.pixel_unshuffle(detail, PACK)]
    if half is not None:
        parts.append(F.pixel_unshuffle(half, 2 * PACK))
    return torch.cat(parts, 1)


def unpack(packed: Tensor, channels: int) -> tuple[Tensor, Tensor]:
    """`pack`'s inverse: the first ``channels`` channels, and the detail at 4x the grid."""
    return packed[:, :channels], F.pixel_shuffle(packed[:, channels:], PACK)


def unpack_refine(packed: Tensor, channels: int) -> tuple[Tensor, Tensor, Tensor]:
    """`pack`'s inverse with the T/2 features: the first ``channels`` channels, the detail at 4x
    the grid and the T/2 features at 8x."""
    rest = packed[:, channels:]
    d = rest.shape[1] // (PACK**2 + (2 * PACK) ** 2)
    quarter, half = rest[:, : d * PACK**2], rest[:, d * PACK**2 :]
    return packed[:, :channels], F.pixel_shuffle(quarter, PACK), F.pixel_shuffle(half, 2 * PACK)


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


def add_context(model: nn.Module, blocks: int) -> nn.Module:
    """``model`` (in place) with ``blocks`` context blocks on its detail path's T/4 features
    (`ContextBlock`, dilations 2, 4, ...: ``blocks=2`` widens their receptive field from 7 to
    103 input pixels); its outputs are unchanged until they are trained, and its preset says
    ``context``. New weights come from the global torch RNG."""
    if blocks < 1:
        raise ValueError(f"context blocks: {blocks} must be >= 1")
    enc = model.detail_encoder
    if enc is None:
        raise ValueError("context blocks widen the detail path's features: add_detail first")
    if len(enc.context):
        raise ValueError("the model's detail path has context blocks already")
    channels = enc.conv2.out_channels
    enc.context = context_blocks(channels, blocks)
    if getattr(model, "preset", None) is not None and model.preset.context != blocks:
        model.preset = dataclasses.replace(model.preset, context=blocks)
    return model


def add_refine(model: nn.Module, hidden: int) -> nn.Module:
    """``model`` (in place) with the T/2 refine path of ``hidden`` channels (module docstring)
    after its detail path; its masks are the T/4 ones upsampled until the path is trained, and
    its preset says ``refine``. New weights come from the global torch RNG."""
    if hidden < 1:
        raise ValueError(f"refine channels: {hidden} must be >= 1")
    if model.detail_encoder is None:
        raise ValueError("the refine path reads the detail path's features: add_detail first")
    if model.mask_decoder.detail_refine is not None:
        raise ValueError("the model has a refine path already")
    detail = model.detail_encoder.conv1.out_channels
    model.mask_decoder.detail_refine = DetailRefine(detail, hidden)
    if getattr(model, "preset", None) is not None and model.preset.refine != hidden:
        model.preset = dataclasses.replace(model.preset, refine=hidden)
    return model


__all__ = [
    "ContextBlock",
    "DetailEncoder",
    "DetailFuse",
    "DetailRefine",
    "add_context",
    "add_detail",
    "add_refine",
    "pack",
    "unpack",
    "unpack_refine",
]
