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

from hrsam import names

THRESHOLDS = tuple(t / 100 for t in names.THRESHOLDS)  # 0.85, 0.90, 0.95
MIOU_AT = names.MIOU_CLICKS


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
    import cv2

    m = np.asarray(mask, bool)
    h, w = m.shape
    d = max(1, round(dilation_ratio * (h * h + w * w) ** 0.5))
    # a square erosion with constant-0 borders (OpenCV's is O(1) per pixel in the kernel size;
    # `boundary_reference` is the same band as a dense max-pool, what the tests compare with)
    kernel = np.ones((2 * d + 1, 2 * d + 1), np.uint8)
    inner = cv2.erode(m.astype(np.uint8), kernel, borderType=cv2.BORDER_CONSTANT, borderValue=0)
    return m & ~inner.astype(bool)


def boundary_reference(mask: np.ndarray, dilation_ratio: float = 0.02) -> np.ndarray:
    """`boundary` as a dense (2d+1)^2 max-pool of the padded outside (slow; the reference)."""
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
    """NoC and NoF at every threshold and mIoU@k for every k in `MIOU_AT` that the matrix
    holds, under their `hrsam.names`."""
    ious = np.asarray(ious, dtype=np.float64)
    k = ious.shape[1] if max_clicks is None else max_clicks
    out: dict[str, float] = {}
    for t in names.THRESHOLDS:
        out[names.noc(t)] = float(noc(ious, t / 100, k).mean())
        out[names.nof(t)] = nof(ious, t / 100, k)
    for c in MIOU_AT:
        if c <= k:
            out[names.miou_at(c)] = miou_at(ious, c)
    return out


def per_object(ious: np.ndarray, metric: str, max_clicks: int | None = None) -> np.ndarray:
    """(N,) float values whose mean is ``metric`` (its sum, for NoF) of the (N, K) matrix."""
    ious = np.asarray(ious, dtype=np.float64)
    k = ious.shape[1] if max_clicks is None else max_clicks
    if found := names.threshold_of(metric):
        _, t = found
        clicks = noc(ious, t / 100, k).astype(np.float64)
        return (clicks == k).astype(np.float64) if names.is_count(metric) else clicks
    if (c := names.clicks_of(metric)) is not None:
        return ious[:, c - 1].copy()
    if metric == names.CLICK_GAIN:
        first, last = names.GAIN_CLICKS
        return ious[:, min(last, ious.shape[1]) - 1] - ious[:, first - 1]
    raise ValueError(
        f"metric {metric!r} is not a per-object metric ({names.noc('<t>')}, {names.nof('<t>')}, "
        f"{names.miou_at('<k>')}, {names.CLICK_GAIN})"
    )


# -- click use: what corrective clicks and the previous mask add --------------------------------

GAIN_CLICKS = names.GAIN_CLICKS  # click_gain = mIoU@5 - mIoU@1
LEVEL = 0.95  # the level of every interval here and in the reports (reports.stats)


def mean_interval(
    values: np.ndarray, resamples: int = 2000, seed: int = 0, level: float = LEVEL
) -> tuple[float, float, float]:
    """(mean, lo, hi): the mean of per-object ``values`` with its percentile bootstrap interval
    (``resamples`` resamples of the objects from a fixed ``seed``)."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1 or len(values) == 0:
        raise ValueError(f"values must be a non-empty 1-d array, got shape {values.shape}")
    idx = np.random.default_rng(seed).integers(0, len(values), size=(resamples, len(values)))
    means = values[idx].mean(axis=1)
    alpha = (1 - level) / 2
    lo, hi = np.quantile(means, [alpha, 1 - alpha])
    return float(values.mean()), float(lo), float(hi)


def click_deltas(ious: np.ndarray, positive: list[list[bool]]) -> tuple[np.ndarray, np.ndarray]:
    """IoU change of every corrective click and its sign: (deltas, positive) over all objects,
    click k >= 2 of an object changing its IoU from ``ious[k - 2]`` to ``ious[k - 1]``.
    ``positive[i]`` lists object i's click labels in order (an object the clicker left alone,
    because its mask was perfect, has fewer clicks than the matrix has columns)."""
    ious = np.asarray(ious, dtype=np.float64)
    deltas, signs = [], []
    for row, labels in zip(ious, positive, strict=True):
        n = min(len(labels), len(row))
        if n >= 2:
            deltas.append(row[1:n] - row[: n - 1])
            signs.append(np.asarray(labels[1:n], bool))
    if not deltas:
        return np.zeros(0), np.zeros(0, bool)
    return np.concatenate(deltas), np.concatenate(signs)


def click_use(
    ious: np.ndarray, positive: list[list[bool]], oracle: np.ndarray | None = None
) -> dict[str, float]:
    """Whether a model uses the clicks after the first and its previous mask:

    * ``click_gain`` = mIoU@5 - mIoU@1 (clamped to the clicks the matrix holds) with its 95%
      bootstrap interval over objects, ``click_gain_lo`` / ``click_gain_hi``;
    * ``neg_click_delta`` / ``pos_click_delta``: the mean IoU change after a negative / positive
      corrective click (click 2 onwards; NaN when there is none);
    * ``harmful_clicks``: the share of corrective clicks after which IoU fell;
    * with ``oracle`` (per object: IoU of the first click plus the ideal ground-truth mask as
      the previous mask): ``oracle_miou`` and ``oracle_gain`` = its mean minus mIoU@1."""
    ious = np.asarray(ious, dtype=np.float64)
    k = min(GAIN_CLICKS[1], ious.shape[1])
    gain, lo, hi = mean_interval(ious[:, k - 1] - ious[:, GAIN_CLICKS[0] - 1])
    deltas, signs = click_deltas(ious, positive)
    nan = float("nan")
    out = {
        names.CLICK_GAIN: gain,
        names.CLICK_GAIN_LO: lo,
        names.CLICK_GAIN_HI: hi,
        names.NEG_CLICK_DELTA: float(deltas[~signs].mean()) if (~signs).any() else nan,
        names.POS_CLICK_DELTA: float(deltas[signs].mean()) if signs.any() else nan,
        names.HARMFUL_CLICKS: float((deltas < 0).mean()) if len(deltas) else nan,
    }
    if oracle is not None:
        oracle = np.asarray(oracle, dtype=np.float64)
        out[names.ORACLE_MIOU] = float(oracle.mean())
        out[names.ORACLE_GAIN] = float((oracle - ious[:, 0]).mean())
    return out
