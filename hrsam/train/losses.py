"""Training losses (HRSAM spec B.4)."""

from __future__ import annotations

import torch
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
