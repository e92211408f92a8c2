"""Training losses: the normalized focal loss of HRSAM (spec B.4) and BCE + soft Dice."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

_EPS = torch.finfo(torch.float32).eps


def normalized_focal_loss(
    logits: Tensor,
    target: Tensor,
    valid: Tensor | None = None,
    gamma: float = 2.0,
    alpha: float = 0.5,
) -> Tensor:
    """Normalized focal loss of RITM/HRSAM, averaged over the batch.

    Per image: p = sigmoid(logit), pt = 1 - |p - y|, beta = (1 - pt)^gamma, a detached scale
    s = sum(valid) / (sum(beta * valid) + eps), loss = sum(valid * -alpha * s * beta *
    log(min(pt + eps, 1))) / sum(valid).

    Args:
        logits: (B, 1, H, W) mask logits.
        target: (B, 1, H, W) {0, 1}.
        valid: (B, 1, H, W) bool, pixels that count (default all).
    """
    p = torch.sigmoid(logits.float())
    y = target.float()
    v = torch.ones_like(p) if valid is None else valid.float()
    pt = 1 - (p - y).abs()
    beta = (1 - pt) ** gamma
    dims = tuple(range(1, p.dim()))
    scale = (v.sum(dims, keepdim=True) / ((beta * v).sum(dims, keepdim=True) + _EPS)).detach()
    loss = -alpha * scale * beta * torch.log(torch.clamp(pt + _EPS, max=1.0))
    per_image = (loss * v).sum(dims) / v.sum(dims).clamp_min(1.0)
    return per_image.mean()


def bce_dice_loss(logits: Tensor, target: Tensor, valid: Tensor | None = None) -> Tensor:
    """Per-pixel binary cross-entropy plus soft Dice (1 - 2|P.Y| / (|P| + |Y|), smoothed by 1),
    each per image over the valid pixels, averaged over the batch. Unlike the normalized focal
    loss, which puts nearly all weight on the hardest pixels, every pixel of the object's
    overlap counts: a recipe option where the hardest pixels cannot be resolved (structures
    thinner than the ts/4 mask grid)."""
    return _bce_dice(logits, target, valid)


def _bce_dice(logits: Tensor, target: Tensor, valid: Tensor | None, bce_weight=None) -> Tensor:
    """`bce_dice_loss`, each pixel's cross-entropy times ``bce_weight`` (B, 1, H, W) where
    given; the normalization stays the valid pixel count."""
    y = target.float()
    v = torch.ones_like(y) if valid is None else valid.float()
    x = logits.float()
    dims = tuple(range(1, x.dim()))
    n = v.sum(dims).clamp_min(1.0)
    w = v if bce_weight is None else v * bce_weight
    bce = (F.binary_cross_entropy_with_logits(x, y, reduction="none") * w).sum(dims) / n
    p = torch.sigmoid(x) * v
    dice = 1 - (2 * (p * y).sum(dims) + 1) / (p.sum(dims) + (y * v).sum(dims) + 1)
    return (bce + dice).mean()


def outline_band(target: Tensor, radius: int) -> Tensor:
    """(B, 1, H, W) {0, 1} target -> {0, 1} pixels within ``radius`` pixels (in the max norm)
    of its outline: where a (2 radius + 1) square window holds both labels."""
    y = target.float()
    k = 2 * radius + 1
    grown = F.max_pool2d(y, k, 1, radius)
    shrunk = -F.max_pool2d(-y, k, 1, radius)
    return grown - shrunk


def bce_dice_band_loss(
    logits: Tensor,
    target: Tensor,
    valid: Tensor | None = None,
    radius: int = 3,
    weight: float = 4.0,
) -> Tensor:
    """`bce_dice_loss` with the cross-entropy of the pixels within ``radius`` of the target's
    outline (`outline_band`) counted ``1 + weight`` times: the outline is a few percent of the
    pixels, and where the masks go wrong once the clicks stop helping
    (benchmarks/results/cpu/pretrain.md, session 17). The normalization stays the valid pixel
    count, so the interior's weight is the same as in `bce_dice_loss`."""
    return _bce_dice(logits, target, valid, 1 + weight * outline_band(target, radius))


LOSSES: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "nfl": normalized_focal_loss,
    "bce_dice": bce_dice_loss,
    "bce_dice_band": bce_dice_band_loss,
}
