"""SAM-style predictor: ``set_image`` once, ``predict`` per click, with the evaluation resize chain
of eval-protocol C.2(b) / HRSAM spec C.2:

    pad the image bottom/right to a multiple of 32 -> resize (bilinear, no antialias) so the long
    side is ts -> pad bottom/right to ts x ts -> encode once.
    per click: (y, x) at original resolution -> canvas (x * w'/Wp, y * h'/Hp); logits at ts/4
    -> upsample to ts x ts -> crop (h', w') -> resize to (Hp, Wp) -> crop (H, W).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

# the oracle mask's logit magnitude: a confident mask, as a trained decoder's own logits are
ORACLE_LOGIT = 10.0


class Predictor:
    """Runs an interactive segmenter on one image at target size ``ts``.

    Args:
        model: an `InteractiveSegmenter` (or anything with ``normalize``, ``encode``, ``decode``).
        ts: target size (long side of the resized input, and the square canvas); multiple of 16.
    """

    def __init__(self, model, ts: int = 1024) -> None:
        if ts < 16 or ts % 16:
            raise ValueError(f"ts={ts} must be a positive multiple of 16")
        self.model = model
        self.ts = ts
        self.embedding: Tensor | None = None

    @property
    def device(self) -> torch.device:
        try:
            return next(self.model.parameters()).device
        except (StopIteration, AttributeError):
            return torch.device("cpu")

    @torch.no_grad()
    def set_image(self, image: np.ndarray | Tensor) -> None:
        """Encodes an (H, W, 3) RGB image (uint8 or float 0..255)."""
        img = torch.as_tensor(np.array(image, dtype=np.float32))  # a copy: PIL arrays are read-only
        if img.dim() != 3 or img.shape[-1] != 3:
            raise ValueError(f"image must be (H, W, 3) RGB, got shape {tuple(img.shape)}")
        x = self.model.normalize(img.permute(2, 0, 1)[None].to(self.device))
        self.embedding = self.model.encode(self.to_canvas(x))

    def to_canvas(self, x: Tensor, mode: str = "bilinear") -> Tensor:
        """(B, C, H, W) at original resolution -> (B, C, ts, ts): zero-pad bottom/right to a
        multiple of 32, resize (``mode``) so the long side is ts, zero-pad to ts x ts. Records the
        geometry that `postprocess` inverts."""
        h, w = x.shape[-2:]
        hp, wp = -(-h // 32) * 32, -(-w // 32) * 32
        x = F.pad(x, (0, wp - w, 0, hp - h))
        scale = self.ts / max(hp, wp)
        hr, wr = round(hp * scale), round(wp * scale)
        exact = {"align_corners": False, "antialias": False} if mode == "bilinear" else {}
        x = F.interpolate(x, size=(hr, wr), mode=mode, **exact)
        self.orig_size, self.pad_size, self.resized = (h, w), (hp, wp), (hr, wr)
        return F.pad(x, (0, self.ts - wr, 0, self.ts - hr))

    @torch.no_grad()
    def ideal_logits(self, gt: np.ndarray, scale: float = ORACLE_LOGIT) -> Tensor:
        """The ideal previous mask of the (H, W) bool ``gt``, as the decoder's (1, 1, ts/4, ts/4)
        low-resolution logits: the object fraction f of every ts/4 cell through this
        predictor's geometry (`to_canvas` with area resizing), as ``scale * (2 f - 1)``.
        Thresholded at 0 and postprocessed it is the best mask the decoder's resolution holds
        (`benchmarks.mask_ceiling`); fed back it is the oracle-mask test's previous mask."""
        canvas = self.to_canvas(torch.from_numpy(np.asarray(gt, np.float32))[None, None], "area")
        return (scale * (2 * F.avg_pool2d(canvas, 4) - 1)).to(self.device)

    @torch.no_grad()
    def predict(
        self,
        points: np.ndarray | Tensor,
        labels: np.ndarray | Tensor,
        prev_logits: Tensor | None = None,
        multimask: bool = False,
    ) -> tuple[Tensor, Tensor]:
        """One click step.

        Args:
            points: (N, 2) clicks as (y, x) at original resolution.
            labels: (N,) 1 positive, 0 negative.
            prev_logits: the low-resolution logits of the previous step, or None.

        Returns:
            logits (K, H, W) at original resolution (threshold at 0) and low-resolution logits
            (1, K, ts/4, ts/4) to feed back (ts/2 with a refine path: `hrsam.models.detail`);
            K = 1 (3 with ``multimask``).
        """
        if self.embedding is None:
            raise RuntimeError("call set_image before predict")
        pts = torch.as_tensor(np.asarray(points), dtype=torch.float32).reshape(-1, 2)
        lab = torch.as_tensor(np.asarray(labels)).reshape(-1).long()
        (hp, wp), (hr, wr) = self.pad_size, self.resized
        xy = torch.stack([pts[:, 1] * (wr / wp), pts[:, 0] * (hr / hp)], -1)
        low, _ = self.model.decode(
            self.embedding,
            xy[None].to(self.device),
            lab[None].to(self.device),
            prev_logits,
            multimask,
        )
        return self.postprocess(low)[0], low

    def postprocess(self, low: Tensor) -> Tensor:
        """(B, K, ts/4, ts/4) (or ts/2) logits -> (B, K, H, W) at original resolution."""
        (h, w), (hp, wp), (hr, wr) = self.orig_size, self.pad_size, self.resized
        x = F.interpolate(low, size=(self.ts, self.ts), mode="bilinear", align_corners=False)
        x = F.interpolate(x[..., :hr, :wr], size=(hp, wp), mode="bilinear", align_corners=False)
        return x[..., :h, :w]
