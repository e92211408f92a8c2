"""Model stand-ins for geometry and protocol tests."""

from __future__ import annotations

import torch
import torch.nn.functional as F


class GroundTruthStandIn:
    """ "Encodes" the image itself and decodes +-10 logits where it is bright, so an image that is
    the object painted white decodes to the ground truth at model resolution (ts / 4).

    Args:
        empty: decode nothing (-10 everywhere) instead.
    """

    def __init__(self, empty: bool = False) -> None:
        self.empty = empty

    def parameters(self):
        return iter([torch.zeros(1)])

    def normalize(self, x):
        return x / 255.0

    def encode(self, x):
        return x

    def decode(self, emb, points, labels, prev_logits=None, multimask=False):
        low = F.interpolate(emb[:, :1], scale_factor=0.25, mode="bilinear", align_corners=False)
        return (torch.full_like(low, -10.0) if self.empty else (low - 0.5) * 20), None
