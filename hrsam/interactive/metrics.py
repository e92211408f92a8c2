"""Interactive segmentation metrics as pure functions (eval-protocol B).

Every number comes from the N x max_clicks IoU matrix of one dataset (all clicks always run):
NoC@t is the first 1-based click whose IoU >= t, and ``max_clicks`` when t is never reached (a
failure counts as max_clicks, it is not dropped); NoF@t counts objects whose NoC equals
``max_clicks`` (the RITM / SegNext code definition, which includes objects that first reach t at
the last click); mIoU@k is the mean IoU after exactly k clicks. IoU and thresholds are float64.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

THRESHOLDS = (0.85, 0.90, 0.95)
MIOU_AT = (1, 2, 3, 4, 5, 10, 15, 20)


def iou(pred: np.ndarray, gt: np.ndarray, ignore: np.ndarray | None = None) -> float:
    """Foreground IoU of boolean (H, W) masks; ``ignore`` pixels leave intersection and union.

    Returns 0.0 when the union is empty (no object and no prediction)."""
    pred, gt = np.asarray(pred, bool), np.asarray(gt, bool)
    if pred.shape != gt.shape:
        raise ValueError(f"pred {pred.shape} and gt {gt.shape} must have the same shape")
    if ignore is not None:
        valid = ~np.asarray(ignore, bool)
        pred, gt = pred & valid, gt & valid
    union = np.count_nonzero(pred | gt)
    return float(np.count_nonzero(pred & gt) / union) if union else 0.0


def noc(ious: np.ndarray, thr: float, max_clicks: int | None = None) -> np.ndarray:
    """Per-object number of clicks to reach IoU >= thr: (N, K) -> (N,) ints in 1..max_clicks."""
    ious = np.asarray(ious, dtype=np.float64)
    if ious.ndim != 2:
        raise ValueError(f"ious must be an (objects, clicks) matrix, got shape {ious.shape}")
    k = ious.shape[1] if max_clicks is None else max_clicks
    if k > ious.shape[1]:
        raise ValueError(f"max_clicks={k} exceeds the {ious.shape[1]} clicks in the matrix")
    hit = ious[:, :k] >= thr
    return np.where(hit.any(1), hit.argmax(1) + 1, k)


def nof(ious: np.ndarray, thr: float, max_clicks: int | None = None) -> int:
    """Objects whose NoC@thr equals max_clicks (code definition, eval-protocol B.4)."""
    k = np.asarray(ious).shape[1] if max_clicks is None else max_clicks
    return int((noc(ious, thr, k) == k).sum())


def nof_strict(ious: np.ndarray, thr: float, max_clicks: int | None = None) -> int:
    """Objects that never reach thr within max_clicks (diagnostic variant)."""
    ious = np.asarray(ious, dtype=np.float64)
    k = ious.shape[1] if max_clicks is None else max_clicks
    return int((ious[:, :k].max(1) < thr).sum())


def miou_at(ious: np.ndarray, k: int) -> float:
    """Mean IoU after exactly k clicks (1-based)."""
    ious = np.asarray(ious, dtype=np.float64)
    if not 1 <= k <= ious.shape[1]:
        raise ValueError(f"k={k} must be in 1..{ious.shape[1]}")
    return float(ious[:, k - 1].mean())


def boundary(mask: np.ndarray, dilation_ratio: float = 0.02) -> np.ndarray:
    """Boundary band of a boolean mask (HQ-SAM): mask minus its erosion by a square of radius
    d = max(1, round(ratio * diagonal)); the image border counts as outside."""
    m = np.asarray(mask, bool)
    h, w = m.shape
    d = max(1, round(dilation_ratio * (h * h + w * w) ** 0.5))
    outside = torch.from_numpy(~m).float()[None, None]
    outside = F.pad(outside, (d, d, d, d), value=1.0)
    near_outside = F.max_pool2d(outside, 2 * d + 1, stride=1)[0, 0].numpy() > 0
    return m & near_outside


def boundary_iou(pred: np.ndarray, gt: np.ndarray, dilation_ratio: float = 0.02) -> float:
    """IoU of the boundary bands of prediction and ground truth (HQ-SAM mBIoU per image)."""
    bp, bg = boundary(pred, dilation_ratio), boundary(gt, dilation_ratio)
    union = np.count_nonzero(bp | bg)
    return float(np.count_nonzero(bp & bg) / union) if union else 0.0


def summarize(ious: np.ndarray, max_clicks: int | None = None) -> dict[str, float]:
    """noc85/90/95, nof85/90/95 and miou@k for every k in `MIOU_AT` that the matrix holds."""
    ious = np.asarray(ious, dtype=np.float64)
    k = ious.shape[1] if max_clicks is None else max_clicks
    out: dict[str, float] = {}
    for t in THRESHOLDS:
        name = f"{round(t * 100)}"
        out[f"noc{name}"] = float(noc(ious, t, k).mean())
        out[f"nof{name}"] = nof(ious, t, k)
    for c in MIOU_AT:
        if c <= k:
            out[f"miou@{c}"] = miou_at(ious, c)
    return out
